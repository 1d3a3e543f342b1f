"""One file per lecture model; each file's docstring states its equations.

Binary and real-valued data (B, D) / (B, T):  LinearGaussianAR, FVSBN, NADE; beyond the lecture,
                                              MADE and OrderlessNADE (order-agnostic).
Token windows, time-major (p, B):             SoftmaxFVSBN, SequenceNADE, DeepNADE, RecurrentNADE;
                                              beyond the lecture, Transformer (causal self-attention).
"""
from .base import Model
from .fvsbn import FVSBN
from .gaussian_ar import LinearGaussianAR
from .nade import NADE
from .recurrent_nade import RecurrentNADE
from .softmax_fvsbn import SoftmaxFVSBN
from .deep_nade import DeepNADE
from .sequence_nade import SequenceNADE
from .made import MADE
from .orderless_nade import OrderlessNADE
from .transformer import Transformer
