"""The RFNet-style usability network (JD, ECCV 2024) and the single-image baseline, in torch.

Inputs (screening/preprocess.py): the generated ad [B, 4, S, S] uint8 (RGB + edge map), the product cut-out
[B, 4, S, S] uint8 (premultiplied RGB + alpha), the description's word ids [B, T] and has_product [B] (1.0, or 0.0
in the image+text mode, where learned "missing" tokens stand in for the product's).
Architecture, as in the paper at a small scale: a convolutional encoder per image input (8 x 8 tokens each), a
text encoder (embeddings + one self-attention block); the feature filter (cross-attention from the product tokens
to the text, then two convolutions over the 8 x 8 grid, residual); self-attention fusion over [CLS, ad, product,
text] tokens; a 6-way classifier whose "available" probability is the binary usability score.
Plain matmul attention with an additive padding mask, so the graph exports to ONNX as is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from c4u_engine.errors import InvalidInputError
from c4u_engine.screening.preprocess import SIDE, TEXT_LEN, TEXT_VOCAB


@dataclass(frozen=True)
class RFNetConfig:
    dim: int = 64
    heads: int = 4
    fusion_layers: int = 2
    num_classes: int = 6
    side: int = SIDE
    text_len: int = TEXT_LEN
    text_vocab: int = TEXT_VOCAB
    # strides of the four image-encoder convolutions (their product is 8: an 8 x 8 token grid at side 64);
    # (2, 2, 1, 2) runs the wide second convolution at a quarter of the positions of (2, 1, 2, 2)
    encoder_strides: tuple[int, ...] = (2, 1, 2, 2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_strides", tuple(int(s) for s in self.encoder_strides))  # JSON gives a list
        if len(self.encoder_strides) != 4 or math.prod(self.encoder_strides) != 8:
            raise InvalidInputError(f"RFNetConfig.encoder_strides: four strides whose product is 8, got "
                                    f"{self.encoder_strides}")

    def to_dict(self) -> dict:
        return asdict(self)


class ConvEncoder(nn.Module):
    """[B, 4, S, S] uint8 -> [B, (S/8)^2, dim] tokens."""

    def __init__(self, dim: int, side: int, strides: tuple[int, ...] = (2, 1, 2, 2)) -> None:
        super().__init__()
        chans = (4, 32, 48, 64, dim)
        layers: list[nn.Module] = []
        for a, b, s in zip(chans, chans[1:], strides):  # batch norm: without it training sat at the class prior
            layers += [nn.Conv2d(a, b, 3, s, 1), nn.BatchNorm2d(b), nn.GELU()]
        self.convs = nn.Sequential(*layers)
        self.grid = side // 8
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x.float() * (1.0 / 255.0) - 0.5)
        return self.norm(h.flatten(2).transpose(1, 2) + self.pos)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.q, self.kv, self.out = heads, nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.hd, self.dim = dim // heads, dim  # Python ints: the ONNX trace must not turn sizes into tensors

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, m, h, hd = x.shape[0], x.shape[1], ctx.shape[1], self.heads, self.hd
        q = self.q(x).reshape(b, n, h, hd).transpose(1, 2)
        kv = self.kv(ctx).reshape(b, m, 2, h, hd).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]  # indexing, not unpacking: the ONNX tracer warns on iterating a tensor
        scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(hd))
        if bias is not None:  # [B, 1, 1, M] additive mask of padding keys
            scores = scores + bias
        return self.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, self.dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.n1, self.attn, self.n2 = nn.LayerNorm(dim), Attention(dim, heads), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.attn(h, h, bias)
        return x + self.mlp(self.n2(x))


class FeatureFilter(nn.Module):
    """Cross-attention from the product-image tokens to the text, convolutions over the grid, residual."""

    def __init__(self, dim: int, heads: int, grid: int) -> None:
        super().__init__()
        self.grid, self.nq, self.attn = grid, nn.LayerNorm(dim), Attention(dim, heads)
        self.conv1, self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1), nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, prod: torch.Tensor, text: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, d = prod.shape[0], prod.shape[2]
        h = self.attn(self.nq(prod), text, bias)
        g = h.transpose(1, 2).reshape(b, d, self.grid, self.grid)
        g = self.conv2(F.gelu(self.conv1(g))).flatten(2).transpose(1, 2)
        return self.norm(prod + g)


class RFNet(nn.Module):
    def __init__(self, config: RFNetConfig = RFNetConfig()) -> None:
        super().__init__()
        c = self.config = config
        d, grid = c.dim, c.side // 8
        self.gen_enc = ConvEncoder(d, c.side, c.encoder_strides)
        self.prod_enc = ConvEncoder(d, c.side, c.encoder_strides)
        self.tok = nn.Embedding(c.text_vocab, d)
        self.text_pos = nn.Parameter(torch.zeros(1, c.text_len, d))
        self.text_block = Block(d, c.heads)
        self.filter = FeatureFilter(d, c.heads, grid)
        self.missing = nn.Parameter(torch.zeros(1, grid * grid, d))  # the product's tokens in image+text mode
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.types = nn.Parameter(torch.zeros(3, 1, d))
        self.fusion = nn.ModuleList(Block(d, c.heads) for _ in range(c.fusion_layers))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, c.num_classes)
        nn.init.normal_(self.text_pos, std=0.02)
        nn.init.normal_(self.missing, std=0.02)
        nn.init.normal_(self.types, std=0.02)

    def forward(self, generated: torch.Tensor, product: torch.Tensor, text: torch.Tensor,
                has_product: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes]. product, text and has_product may have batch 1 (one product for all B ads,
        the screening case): the product and the text are then encoded once and broadcast."""
        pad = (text == 0).to(torch.float32)
        bias = (pad * -1e4)[:, None, None, :]
        t = self.text_block(self.tok(text) + self.text_pos, bias)
        g = self.gen_enc(generated)
        b = g.shape[0]
        p = self.filter(self.prod_enc(product), t, bias)
        w = has_product.to(torch.float32)[:, None, None]
        p = (w * p + (1.0 - w) * self.missing).expand(b, -1, -1)
        t = t.expand(b, -1, -1)
        x = torch.cat([self.cls.expand(b, -1, -1), g + self.types[0], p + self.types[1], t + self.types[2]], 1)
        n_img = 1 + g.shape[1] + p.shape[1]
        fbias = torch.cat([torch.zeros(b, n_img, device=pad.device), pad.expand(b, -1)], 1)[:, None, None, :] * -1e4
        for blk in self.fusion:
            x = blk(x, fbias)
        return self.head(self.norm(x[:, 0]))


class SingleImageCNN(nn.Module):
    """The paper's comparison: a CNN on the generated ad alone (same encoder), pooled, then a classifier."""

    def __init__(self, config: RFNetConfig = RFNetConfig()) -> None:
        super().__init__()
        self.config = config
        self.enc = ConvEncoder(config.dim, config.side, config.encoder_strides)
        self.head = nn.Sequential(nn.Linear(config.dim, 2 * config.dim), nn.GELU(),
                                  nn.Linear(2 * config.dim, config.num_classes))

    def forward(self, generated: torch.Tensor, product: torch.Tensor | None = None, text: torch.Tensor | None = None,
                has_product: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.enc(generated).mean(1))
