from speckd_bench.cli import main

main()
