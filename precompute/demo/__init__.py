"""The embedded demo: the Fashion-MNIST CNN (model), its training (train) and the dataset (data)."""
