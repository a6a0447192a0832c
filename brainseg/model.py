"""The 3D U-Net. ``forward`` returns logits in every mode; probabilities come from ``predict``."""
from __future__ import annotations

import torch
from torch import nn

from brainseg.config import ModelConfig


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}; expected 'batch' or 'instance'")


class ConvBlock(nn.Module):
    """Two 3x3x3 convolutions with normalisation and LeakyReLU, optionally residual."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, residual: bool, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=False),
            _norm(norm, out_ch),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Dropout3d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False),
            _norm(norm, out_ch),
        )
        self.skip = None
        if residual:
            self.skip = nn.Identity() if in_ch == out_ch else nn.Conv3d(in_ch, out_ch, 1, bias=False)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.skip is not None:
            y = y + self.skip(x)
        return self.act(y)


class UNet3D(nn.Module):
    """Encoder-decoder with skip connections.

    Args:
        config: channel widths (encoder levels then bottleneck), norm, dropout, residual blocks.
    Input (N, in_channels, X, Y, Z) with each spatial size a multiple of ``2**levels``;
    output logits (N, out_channels, X, Y, Z).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        widths = list(config.features)  # ModelConfig checked: at least one encoder level and a bottleneck
        self.encoders = nn.ModuleList()
        previous = config.in_channels
        for width in widths[:-1]:
            self.encoders.append(ConvBlock(previous, width, config.norm, config.residual))
            previous = width
        self.pool = nn.MaxPool3d(2)
        self.bottleneck = ConvBlock(previous, widths[-1], config.norm, config.residual, config.dropout)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        previous = widths[-1]
        for width in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose3d(previous, width, 2, stride=2))
            self.decoders.append(ConvBlock(2 * width, width, config.norm, config.residual))
            previous = width
        self.head = nn.Conv3d(previous, config.out_channels, 1)

    @property
    def divisor(self) -> int:
        return self.config.divisor

    def check_input_shape(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input (N, {self.config.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        d = self.divisor
        if any(s % d for s in x.shape[2:]):
            fixed = tuple(-(-s // d) * d for s in x.shape[2:])
            raise ValueError(f"spatial size {tuple(x.shape[2:])} is not a multiple of {d}: pad to {fixed}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities: sigmoid per region, or softmax over labels."""
        logits = self.forward(x)
        return probabilities(logits, self.config.output_mode)


def probabilities(logits: torch.Tensor, output_mode: str) -> torch.Tensor:
    """Logits (N, K, ...) -> probabilities along dim 1."""
    if output_mode == "regions":
        return torch.sigmoid(logits)
    if output_mode == "labels":
        return torch.softmax(logits, dim=1)
    raise ValueError(f"unknown output_mode {output_mode!r}; expected 'regions' or 'labels'")
