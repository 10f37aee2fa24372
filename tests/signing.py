"""A release signer for the tests: a real OpenPGP key made by gpg, signing stand-in tarballs.

Element's own key cannot sign our stand-in tarballs, so the tests generate a key of their own
and hand it to the program the way a mirror operator would (`elementSigningKey` +
`elementSigningFingerprint`). The server then checks the signature with the same gpg call as
for a real Element release.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class Signer:
    """One gpg home holding one signing key (ed25519: fast to generate, no passphrase)."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        uid = f"{name} <{name.lower().replace(' ', '-')}@releases.test>"
        self._gpg("--quick-generate-key", "--passphrase", "", uid, "ed25519", "sign", "never")
        listing = self._gpg("--with-colons", "--fingerprint", uid)
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        self.public_key = self._gpg("--armor", "--export", self.fingerprint)

    def _gpg(self, *args: str) -> str:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        proc = subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", *args],
                              capture_output=True, text=True, env=env, timeout=60, check=True)
        return proc.stdout

    def sign(self, path: Path) -> Path:
        """Write the detached armored signature `<path>.asc`, as Element's releases ship it."""
        signature = path.with_name(path.name + ".asc")
        self._gpg("--yes", "--local-user", self.fingerprint, "--armor", "--detach-sign", "--output", str(signature), str(path))
        return signature

    def close(self) -> None:
        """Stop the gpg-agent this home started, so no process outlives the test."""
        subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(self.home)},
                       capture_output=True, timeout=30, check=False)
