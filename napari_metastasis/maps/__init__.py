"""The probability map: the map itself, its stores, the heatmap picture and its regions."""
