"""``axlab lut fetch-evoapprox``: download EvoApproxLib, check the archive and index its netlists."""
from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from hwsim.errors import AxlabError
from hwsim.netlist import parse_header, read_netlist
from hwsim.tools import cache_dir

ARCHIVE_URL = "https://github.com/ehw-fit/evoapproxlib/archive/refs/tags/{tag}.tar.gz"


def fetch_evoapprox(tag: str = "v2022", dest: Path | None = None, timeout: float = 30.0) -> tuple[Path, int]:
    """Download the tagged library archive, unpack it to ``dest`` and write ``index.json``.

    The index records the archive's sha256 and, per netlist, its path, module, sha256 and
    header figures. Returns (dest, number of netlists). Offline: one-line AxlabError.
    """
    dest = Path(dest) if dest else cache_dir() / "evoapprox" / tag
    url = ARCHIVE_URL.format(tag=tag)
    with tempfile.TemporaryDirectory(prefix="axlab-fetch-") as tmp:
        archive = Path(tmp) / "lib.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(archive, "wb") as fh:
                shutil.copyfileobj(resp, fh)
        except urllib.error.HTTPError as exc:
            raise AxlabError(f"cannot download EvoApproxLib {tag}: HTTP {exc.code} for {url} (unknown tag?)") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AxlabError(f"cannot download EvoApproxLib {tag} from {url}: {reason} (offline? "
                             "point axlab at a local checkout instead)") from None
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        try:
            with tarfile.open(archive) as tf:
                members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".v")]
                if not members:
                    raise AxlabError(f"EvoApproxLib {tag} archive holds no Verilog netlists")
                staging = Path(tmp) / "unpacked"
                tf.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError) as exc:
            raise AxlabError(f"EvoApproxLib {tag} archive is corrupt ({exc}); nothing installed") from None
        entries = []
        for f in sorted(staging.rglob("*.v")):
            info = read_netlist(f)
            rel = f.relative_to(staging).as_posix().split("/", 1)[-1]
            entries.append({"path": rel, "module": info.module, "sha256": info.sha256,
                            "published": {k: v.value for k, v in parse_header(info.text).items()}})
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        root = next(staging.iterdir())
        shutil.move(str(root), dest)
    (dest / "index.json").write_text(json.dumps({"tag": tag, "url": url, "archive_sha256": digest,
                                                 "netlists": entries}, indent=1))
    return dest, len(entries)
