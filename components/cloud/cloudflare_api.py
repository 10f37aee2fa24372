"""The Cloudflare v4 API as the program's own dynamic providers call it, with the Cloudflare provider's
credentials.

The Cloudflare provider takes an API token (`cloudflare:apiToken`, CLOUDFLARE_API_TOKEN) or the legacy
Global API key with its account's e-mail (`cloudflare:apiKey` + `cloudflare:email`, CLOUDFLARE_API_KEY +
CLOUDFLARE_EMAIL), and `cloudflare:baseUrl` / CLOUDFLARE_BASE_URL for another endpoint
(terraform-provider-cloudflare internal/provider.go). The dynamic providers (zone_rules.py,
zone_settings.py) must work with whatever the provider works with, so they read the same settings, in
`configure` (pulumi/pulumi #17673): the credentials never enter a resource's state. The API token
format is the provider's own check (`^[0-9A-Za-z\\-_]{40,80}$`, likewise the key's 37-60), applied
before any resource (components/preflight.py).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pulumi.dynamic import ConfigureRequest, ResourceProvider

CLOUDFLARE_API = "https://api.cloudflare.com/client/v4"
TOKEN_RE = re.compile(r"^[0-9A-Za-z\-_]{40,80}$")
KEY_RE = re.compile(r"^[0-9A-Za-z\-_]{37,60}$")
# (stack config key, environment variable), in the provider's order of preference.
TOKEN_SETTING = ("cloudflare:apiToken", "CLOUDFLARE_API_TOKEN")
KEY_SETTING = ("cloudflare:apiKey", "CLOUDFLARE_API_KEY")
EMAIL_SETTING = ("cloudflare:email", "CLOUDFLARE_EMAIL")
BASE_URL_SETTING = ("cloudflare:baseUrl", "CLOUDFLARE_BASE_URL")
SERVICE_KEY_SETTING = ("cloudflare:apiUserServiceKey", "CLOUDFLARE_API_USER_SERVICE_KEY")


def check_credentials(config: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Before any resource: the Cloudflare provider and the program's dynamic providers can authenticate,
    the same way (an API token, or the Global API key with its e-mail), with values of the right form."""
    from components.settings import SettingsError

    credentials = Credentials.of(config, environ)
    if credentials.token and not TOKEN_RE.match(credentials.token):
        raise SettingsError("config cloudflare:apiToken is not a Cloudflare API token (40-80 letters, digits, - and _) "
                            "(fix: pulumi config set --secret cloudflare:apiToken <token>)")
    if credentials.token:
        return
    if credentials.key and not KEY_RE.match(credentials.key):
        raise SettingsError("config cloudflare:apiKey is not a Cloudflare Global API key (37-60 letters, digits, - and "
                            "_) (fix: pulumi config set --secret cloudflare:apiKey <key>)")
    if credentials.key and not credentials.email:
        raise SettingsError("config cloudflare:apiKey needs the account's e-mail (fix: pulumi config set "
                            "cloudflare:email <address>, or use an API token: cloudflare:apiToken)")
    if credentials.key:
        return
    only_service_key = _setting(config, environ, SERVICE_KEY_SETTING)
    raise SettingsError(
        "config cloudflare:apiToken is required" + (" (cloudflare:apiUserServiceKey works for Origin CA "
                                                    "certificates only)" if only_service_key else "")
        + " (fix: pulumi config set --secret cloudflare:apiToken <token> with Zone:Read, DNS:Edit, Zone Settings:Edit, "
        "Zone WAF:Edit, Config Rules:Edit, Transform Rules:Edit, Single Redirect:Edit, SSL and Certificates:Edit, "
        "Bot Management:Edit; or cloudflare:apiKey with cloudflare:email)")


class Settings(Protocol):
    """The stack config as the program (a mapping) or a dynamic provider (pulumi.dynamic.Config) gets it."""

    def get(self, key: str) -> Any: ...


def _setting(config: Settings, environ: Mapping[str, str], names: tuple[str, str]) -> str:
    return str(config.get(names[0]) or environ.get(names[1]) or "")


@dataclass(frozen=True)
class Credentials:
    """What authenticates a call: an API token, or the Global API key and its e-mail."""

    token: str = ""
    key: str = ""
    email: str = ""
    base_url: str = CLOUDFLARE_API

    @classmethod
    def of(cls, config: Settings, environ: Mapping[str, str]) -> Credentials:
        """The provider's settings, from the stack config first, then the environment."""
        return cls(token=_setting(config, environ, TOKEN_SETTING), key=_setting(config, environ, KEY_SETTING),
                   email=_setting(config, environ, EMAIL_SETTING),
                   base_url=_setting(config, environ, BASE_URL_SETTING).rstrip("/") or CLOUDFLARE_API)

    @property
    def usable(self) -> bool:
        return bool(self.token or (self.key and self.email))

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        return {"X-Auth-Email": self.email, "X-Auth-Key": self.key}


class CloudflareApiError(RuntimeError):
    """A call failed; the message carries Cloudflare's own errors, `code` the first error code."""

    def __init__(self, status: int, method: str, path: str, errors: Any) -> None:
        super().__init__(f"Cloudflare API {method} {path}: HTTP {status}: {errors}")
        self.status = status
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        self.code = int(first.get("code") or 0)


def call(credentials: Credentials | None, method: str, path: str, body: Any = None) -> Any:
    """One API call; the envelope's `result`."""
    if credentials is None or not credentials.usable:
        raise CloudflareApiError(0, method, path, "no Cloudflare credentials: set cloudflare:apiToken (or "
                                 "cloudflare:apiKey and cloudflare:email), or CLOUDFLARE_API_TOKEN")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{credentials.base_url}{path}", data=data, method=method,
                                     headers={**credentials.headers(), "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["result"]
    except urllib.error.HTTPError as error:
        try:
            errors = json.load(error).get("errors")
        except ValueError:
            errors = error.reason
        raise CloudflareApiError(error.code, method, path, errors) from None


class CloudflareProvider(ResourceProvider):
    """A dynamic provider calling the Cloudflare API with the Cloudflare provider's credentials.

    Pickled into the state by reference to its module and class (pulumi's dynamic providers use dill):
    every attribute a method reads has a class-level default, so a provider pickled by an older version
    of this code still loads (tests/unit/test_dynamic_pickles.py)."""

    serialize_as_secret_always = False  # it captures no secret: the credentials come from `configure`
    credentials: Credentials | None = None

    def configure(self, req: ConfigureRequest) -> None:
        self.credentials = Credentials.of(req.config, os.environ)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return call(self.credentials, method, path, body)
