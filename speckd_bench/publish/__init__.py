"""What leaves the results folder: the results README, the HTML page, plots and the Hub export."""
