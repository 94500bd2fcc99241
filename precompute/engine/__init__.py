"""The algorithm's stages, each on tensors: models and how their layers are read, the one-pass scan
of a dataset, facet finding (PCA, t-SNE, k-means), and activation maximization with its image
parameterizations and transforms."""
