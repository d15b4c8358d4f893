print("no plots in the mini template")
