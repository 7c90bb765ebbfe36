"""Local CA and leaf certificates (uses `cryptography`; import lazily from CLI code paths)."""

from .authority import CAInfo, CertificateAuthority
from .leaves import CertPair, LeafInfo, LeafIssuer, build_leaf, sign_leaf
from .names import BUILTIN_SUFFIXES, DEFAULT_NAME, LEAF_SUFFIXES, PERMITTED_NETWORKS, utc_now

__all__ = [
    "BUILTIN_SUFFIXES",
    "CAInfo",
    "CertPair",
    "CertificateAuthority",
    "DEFAULT_NAME",
    "LEAF_SUFFIXES",
    "LeafInfo",
    "LeafIssuer",
    "PERMITTED_NETWORKS",
    "build_leaf",
    "sign_leaf",
    "utc_now",
]
