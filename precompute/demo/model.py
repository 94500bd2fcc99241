"""The demo network: a small CNN for 28 x 28 Fashion-MNIST, shaped and named like CaffeNet.

Layer names carry the paper's roles: conv1..conv3 (convolutions), fc6, fc7 (the embedding
used to cluster exemplars) and fc8 (class logits, one neuron per class). Every layer's
output is its pre-ReLU value, so activation maximization has a gradient while a unit is off.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSet

DEMO_LAYERS = ("conv1", "conv2", "conv3", "fc6", "fc7", "fc8")
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530   # Fashion-MNIST training pixels


class DemoNet(nn.Module):
    """conv(32)-pool-conv(64)-pool-conv(128)-pool-fc(256)-fc(256)-fc(10): 746 neurons."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc6 = nn.Linear(128 * 3 * 3, 256)
        self.relu6 = nn.ReLU()
        self.drop6 = nn.Dropout(0.3)
        self.fc7 = nn.Linear(256, 256)
        self.relu7 = nn.ReLU()
        self.drop7 = nn.Dropout(0.3)
        self.fc8 = nn.Linear(256, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pool, then ReLU: the same function and the same gradients, bit for bit, as ReLU then
        # pool (ReLU keeps positive values and their order, so the pool picks the same element;
        # tested), but the ReLU and its backward touch a quarter of the values. Synthesis steps
        # run 1.25x (fc7) to 1.65x (conv3) faster on CPU, where element-wise passes rival the convs.
        x = self.relu1(self.pool1(self.conv1(x)))
        x = self.relu2(self.pool2(self.conv2(x)))
        x = self.relu3(self.pool3(self.conv3(x)))
        x = self.drop6(self.relu6(self.fc6(self.flatten(x))))
        x = self.drop7(self.relu7(self.fc7(x)))
        return self.fc8(x)


def demo_preprocess(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> network input (Fashion-MNIST mean/std)."""
    return (pixels - PIXEL_MEAN) / PIXEL_STD


def train_demo_model(train: ImageSet, test: ImageSet, epochs: int = 6, seed: int = 0,
                     batch_size: int = 128, progress=None) -> tuple[DemoNet, float, float]:
    """Train DemoNet deterministically; return (model, test accuracy, seconds)."""
    torch.manual_seed(seed)
    model = DemoNet(len(train.classes))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    n = len(train)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = demo_preprocess(train.pixels(idx))
            # light augmentation: random horizontal flips (fashion items are left-right symmetric)
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(model(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress:
                progress(epoch * steps_per_epoch + i + 1, epochs * steps_per_epoch)
    accuracy = evaluate(model, test)
    return model.eval(), accuracy, time.perf_counter() - start


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(data), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(data)))
        correct += (model(demo_preprocess(data.pixels(idx))).argmax(1) == data.labels[idx]).sum().item()
    return correct / len(data)
