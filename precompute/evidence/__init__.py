"""How far an atlas reproduces the paper and explains its neurons: `evaluate` measures a store's runs
against the claims, `effnet` builds the EfficientNet-Lite0 subset, `explain` and `scoring` give the
explanation score, `measures` the image statistics, `photos` the shipped photos they use."""
