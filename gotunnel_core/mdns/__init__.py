"""Announce tunnel names on the LAN over mDNS (NAME.local) and check local .local resolution."""

from .advertiser import MdnsAdvertiser
from .interfaces import InterfaceInfo, SelectedInterface, select_interfaces, take_snapshot
from .naming import NameConflict
from .resolver_check import ResolverCheck, check_local_resolution

__all__ = [
    "InterfaceInfo",
    "MdnsAdvertiser",
    "NameConflict",
    "ResolverCheck",
    "check_local_resolution",
    "SelectedInterface",
    "select_interfaces",
    "take_snapshot",
]
