"""Raw data: fetched from the mirror or upstream, verified against pinned SHA-256 digests."""

from replication.data.fetch import MIRROR_ENV, Network, RawFile, fetch_file, mirror_root
from replication.data.idx import parse_idx, read_idx

__all__ = ["MIRROR_ENV", "Network", "RawFile", "fetch_file", "mirror_root", "parse_idx", "read_idx"]
