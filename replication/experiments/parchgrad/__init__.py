"""ParchGrad (Park, Jeon, Choi, 2023): channel statistics, toy studies and experiments."""
