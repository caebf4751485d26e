from speckd_bench.cli.app import main

main()
