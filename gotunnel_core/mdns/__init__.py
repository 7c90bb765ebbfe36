"""Announce tunnel names on the LAN over mDNS (NAME.local) and check local .local resolution."""

from .advertiser import MdnsAdvertiser
from .interfaces import InterfaceInfo, SelectedInterface, select_interfaces, take_snapshot
from .naming import NameConflict

__all__ = [
    "InterfaceInfo",
    "MdnsAdvertiser",
    "NameConflict",
    "SelectedInterface",
    "select_interfaces",
    "take_snapshot",
]
