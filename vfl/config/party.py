"""Party config: who this party is, how ids are normalised, and the schema of its data files.

Example (E, the active party)::

    [party]
    name = "shop"
    role = "active"
    publish = ["phase", "epoch"]    # what the coordinator may learn (this is the default)
    min_key_bits = 2048             # refuse plans with a smaller Paillier key (the default)
    allow_short_exponent = false    # refuse short-exponent re-randomisation (the default)

    [ids]
    strip = true
    case = "lower"
    unicode = "NFC"                 # or NFKC, NFD, NFKD, none

    [users]
    path = "users.csv"
    id_column = "user_id"
    numeric = ["views", "carts"]
    categorical = ["top_category"]

    [items]
    path = "items.csv"
    id_column = "item_id"
    numeric = ["price"]
    categorical = ["category"]

    [interactions]
    path = "interactions.csv"
    user_column = "user_id"
    item_column = "item_id"
    time_column = "timestamp"
    label_column = "purchased"

    [executor]                      # optional: where PSI and Paillier batches run
    kind = "ray"                    # or "local" (a process pool on this machine)
    address = "local"               # "auto" (ray start on this host) or "ray://HOST:PORT"
    num_cpus = 64                   # default: every core, or the cluster's CPUs
    chunk_size = 64                 # Paillier values per task at most

    [network]                       # optional: only for runs through a coordinator
    coordinator = "127.0.0.1:50051"
    ca = "certs/ca.pem"
    cert = "certs/shop.pem"
    key = "certs/shop.key"
    timeout_s = 60

P (the passive party) has ``role = "passive"`` and only ``[party]``, ``[ids]``, ``[users]`` and
``[network]``. Paths are relative to the config file's directory and are absolute in the loaded
model.
"""

from __future__ import annotations

import pkgutil
import re
import unicodedata
from collections import Counter
from enum import Enum
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from vfl.config.tls_files import check_tls_files
from vfl.config.toml_io import ConfigPath, load_toml_model, read_pem_files, rule_error
from vfl.executor import DEFAULT_TASK_CHUNK, ExecutorKind, ExecutorSpec
from vfl.protocol.options import DEFAULT_MIN_KEY_BITS, SecurityFloor

_FROZEN = ConfigDict(extra="forbid", frozen=True)
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# host:port, where host is a name, an IPv4 address or a bracketed IPv6 address
_HOST_PORT = re.compile(
    r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r":(?P<port>[0-9]{1,5})$"
)


def _check_address(value: str, *, allow_port_zero: bool) -> str:
    """Return ``value`` if it is ``host:port`` with a valid port, else raise a rule error."""
    match = _HOST_PORT.match(value)
    low = 0 if allow_port_zero else 1
    if match is None or not low <= int(match.group("port")) <= 65535:
        raise rule_error(
            f"'{value}' is not a host:port address",
            f'write it as "host:port" with a port {low}..65535, e.g. "127.0.0.1:50051" '
            '(IPv6: "[::1]:50051")',
        )
    return value


def _check_dial_address(value: str) -> str:
    """Validator for an address a party dials: ``host:port`` with port 1..65535."""
    return _check_address(value, allow_port_zero=False)


def _check_bind_address(value: str) -> str:
    """Validator for an address a server binds: ``host:port``, port 0 picks a free port."""
    return _check_address(value, allow_port_zero=True)


HostPort = Annotated[str, AfterValidator(_check_dial_address)]
"""An address to connect to, ``host:port`` with port 1..65535."""

BindAddress = Annotated[str, AfterValidator(_check_bind_address)]
"""An address to listen on, ``host:port``; port 0 lets the system pick a free port."""


class Role(Enum):
    """Which side of the split a party is on."""

    ACTIVE = "active"  # E: holds labels, items and interaction log
    PASSIVE = "passive"  # P: holds per-user features only


class Case(Enum):
    """Letter-case rule applied to ids."""

    LOWER = "lower"
    UPPER = "upper"
    KEEP = "keep"


class FileFormat(Enum):
    """Supported data file formats."""

    CSV = "csv"
    PARQUET = "parquet"


class Published(Enum):
    """What a party may tell the coordinator with its heartbeats (``[party] publish``).

    ``phase``: the pipeline phase it is in; ``epoch``: E's finished epoch number; ``loss``:
    E's mean training loss of that epoch; ``valid_ndcg``: E's validation NDCG@10 of that
    epoch; ``metrics``: E's final test AUC, HR@10 and NDCG@10. P has no epochs or metrics:
    only ``phase`` applies to it, and it never publishes the intersection size.
    """

    PHASE = "phase"
    EPOCH = "epoch"
    LOSS = "loss"
    VALID_NDCG = "valid_ndcg"
    METRICS = "metrics"


DEFAULT_PUBLISH = (Published.PHASE, Published.EPOCH)


KINDS_PACKAGE = "parties"  # one module per kind of organisation, loaded by vfl.kinds
DEFAULT_KIND = {Role.ACTIVE: "ecommerce", Role.PASSIVE: "payments"}


def kind_names() -> tuple[str, ...]:
    """The kinds ``parties/`` defines (its module names), without importing them."""
    spec = find_spec(KINDS_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        return ()
    found = pkgutil.iter_modules(list(spec.submodule_search_locations))
    return tuple(sorted(m.name for m in found if not m.name.startswith("_")))


class PartySection(BaseModel):
    """``[party]``: display name, role, and what this party publishes to the coordinator."""

    model_config = _FROZEN

    name: str
    role: Role
    # Development only: accept a job with train.protocol = "plaintext". Both parties must
    # set it; the encrypted protocol is the default and needs nothing here.
    allow_plaintext: bool = False
    # This party's security floor: a job plan asking for a smaller Paillier modulus, or for
    # short-exponent re-randomisation of ciphertexts returned to this party, is refused.
    min_key_bits: Annotated[int, Field(ge=256)] = DEFAULT_MIN_KEY_BITS
    allow_short_exponent: bool = False
    # What the coordinator learns besides sizes and timing (see Published); [] for nothing.
    publish: tuple[Published, ...] = DEFAULT_PUBLISH
    # The kind of organisation (a module of parties/, vfl.kinds); None: the role's default,
    # "ecommerce" (active) or "payments" (passive).
    kind: str | None = None

    def floor(self, config: str = "its party config") -> SecurityFloor:
        """This party's :class:`~vfl.protocol.options.SecurityFloor`, naming ``config``."""
        return SecurityFloor(
            min_key_bits=self.min_key_bits,
            allow_short_exponent=self.allow_short_exponent,
            config=config,
        )

    @model_validator(mode="after")
    def _known_kind(self) -> PartySection:
        """``kind`` names a module of ``parties/`` (listed, not imported)."""
        if self.kind is not None and self.kind not in kind_names():
            raise rule_error(
                f"no kind '{self.kind}' in parties/ (kinds: {', '.join(kind_names())})",
                f"use one of the kinds, or add parties/{self.kind}.py defining KIND",
                "kind",
            )
        return self

    @model_validator(mode="after")
    def _publish_once(self) -> PartySection:
        """Each ``publish`` entry at most once."""
        repeated = [p.value for p, n in Counter(self.publish).items() if n > 1]
        if repeated:
            raise rule_error(
                f"'{repeated[0]}' is listed twice", "list each entry once in 'publish'", "publish"
            )
        return self


class UnicodeForm(Enum):
    """Unicode normalisation applied to ids (:func:`unicodedata.normalize`), or none."""

    NFC = "NFC"
    NFKC = "NFKC"
    NFD = "NFD"
    NFKD = "NFKD"
    NONE = "none"


_MAX_STEPS = 8


class LeadingZeros(Enum):
    """``[ids] leading_zeros``: whether an all-digit id keeps its leading zeros."""

    KEEP = "keep"
    STRIP = "strip"


LOCAL_ID_KEYS = {"max_length"}  # [ids] keys each party sets for itself (not in the handshake)


class IdRule(BaseModel):
    """``[ids]``: how raw ids are normalised; both parties must state the same rule.

    One step is ``step(x) = U(case(strip(U(x))))``: the Unicode normal form ``U`` (``unicode``)
    first, so that compatibility characters (full-width letters, mathematical bold, ...)
    are plain letters before case mapping and stripping see them; then surrounding
    whitespace removed (if ``strip``) and letter case mapped (``case``); then ``U`` again,
    because case mapping can leave a string outside the normal form. ``normalise`` repeats
    the step until the result no longer changes (at most :data:`_MAX_STEPS` times; two in
    practice), so ``normalise(normalise(x)) == normalise(x)``: the loader's ids, normalised
    once, give the same PSI result as the raw ids (the PSI applies the rule again). This
    is the only implementation of the rule (:mod:`vfl.data.loading` and :mod:`vfl.psi`
    both call it). The rule is part of the PSI handshake (:meth:`fingerprint`): parties
    stating different rules stop before any point is exchanged. ``max_length`` is each
    party's own limit and not part of it.
    """

    model_config = _FROZEN

    strip: bool = True
    case: Case = Case.KEEP
    unicode: UnicodeForm = UnicodeForm.NFC
    leading_zeros: LeadingZeros = LeadingZeros.KEEP  # "strip": all-digit "007" -> "7"
    # longest id accepted (characters, after normalisation); local, not part of the handshake
    max_length: PositiveInt = 256

    def normalise(self, raw: str) -> str:
        """Return ``raw`` under this rule: :meth:`_step` repeated to its fixed point, then
        (``leading_zeros = "strip"``) leading zeros dropped from an all-digit id."""
        value = self._step(raw)
        for _ in range(_MAX_STEPS):
            again = self._step(value)
            if again == value:
                break
            value = again
        if self.leading_zeros is LeadingZeros.STRIP and value.isascii() and value.isdigit():
            return value.lstrip("0") or "0"
        return value

    def _step(self, raw: str) -> str:
        """``U(case(strip(U(raw))))``, see the class docstring."""
        value = self._unicode(raw)
        value = value.strip() if self.strip else value
        if self.case is Case.LOWER:
            value = value.lower()
        elif self.case is Case.UPPER:
            value = value.upper()
        return self._unicode(value)

    def _unicode(self, value: str) -> str:
        if self.unicode is UnicodeForm.NONE:
            return value
        return unicodedata.normalize(self.unicode.value, value)

    def fingerprint(self) -> str:
        """A canonical text of the rule, e.g. ``strip=1;case=lower;unicode=NFC;steps=2``.

        ``steps=2`` marks the rule with ``U`` before and after the case mapping (earlier
        versions applied ``U`` only last, which is not idempotent): a party of such a version
        states another fingerprint and is refused at the PSI hello.
        """
        zeros = ";zeros=strip" if self.leading_zeros is LeadingZeros.STRIP else ""
        return (
            f"strip={int(self.strip)};case={self.case.value};unicode={self.unicode.value};"
            f"steps=2{zeros}"
        )


class _DataFile(BaseModel):
    """A data file reference: path plus optional explicit format."""

    model_config = _FROZEN

    path: ConfigPath
    format: FileFormat | None = None

    @property
    def file_format(self) -> FileFormat:
        """The explicit ``format`` or the one implied by the path suffix."""
        if self.format is not None:
            return self.format
        return FileFormat(_SUFFIX_FORMATS[self.path.suffix.lower()])

    @model_validator(mode="after")
    def _format_known(self) -> _DataFile:
        """Require a known suffix unless ``format`` is given."""
        if self.format is None and self.path.suffix.lower() not in _SUFFIX_FORMATS:
            raise rule_error(
                f"cannot infer the file format from suffix '{self.path.suffix}'",
                'use a .csv or .parquet file, or add format = "csv" or "parquet"',
                "format",
            )
        return self


class FeatureSchema(_DataFile):
    """``[users]`` / ``[items]``: one row per entity, with an id column and feature columns."""

    id_column: str = Field(min_length=1)
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Numeric then categorical feature column names."""
        return self.numeric + self.categorical

    @model_validator(mode="after")
    def _columns_distinct(self) -> FeatureSchema:
        """No column twice, and the id column is not a feature."""
        for field in ("numeric", "categorical"):
            _reject_repeats(getattr(self, field), field)
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise rule_error(
                f"column '{both[0]}' is listed both as numeric and categorical",
                "list it in only one of 'numeric' and 'categorical'",
                "categorical",
            )
        if self.id_column in self.feature_columns:
            field = "numeric" if self.id_column in self.numeric else "categorical"
            raise rule_error(
                f"the id column '{self.id_column}' is also listed as a feature",
                f"remove '{self.id_column}' from '{field}'",
                field,
            )
        return self


class InteractionSchema(_DataFile):
    """``[interactions]``: E's event log; without ``label_column`` every row is a positive."""

    user_column: str = Field(min_length=1)
    item_column: str = Field(min_length=1)
    time_column: str = Field(min_length=1)
    label_column: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """All columns this schema reads."""
        named = (self.user_column, self.item_column, self.time_column, self.label_column)
        return tuple(c for c in named if c is not None)

    @model_validator(mode="after")
    def _columns_distinct(self) -> InteractionSchema:
        """user, item, time and label must be four different columns."""
        seen: dict[str, str] = {}
        for field in ("user_column", "item_column", "time_column", "label_column"):
            column = getattr(self, field)
            if column is None:
                continue
            if column in seen:
                raise rule_error(
                    f"column '{column}' is used for both '{seen[column]}' and '{field}'",
                    "give each role its own column",
                    field,
                )
            seen[column] = field
        return self


class PartnerSection(BaseModel):
    """One ``[[network.partners]]`` entry of E: a passive party, its pinned sealing public key
    and (optionally) the SHA-256 of its data schema, checked at the handshake."""

    model_config = _FROZEN

    name: str  # its certificate CN, as listed in the coordinator's parties
    box_public: ConfigPath  # its pinned sealing public key (<name>.box.pub of 'vfl certs')
    schema_sha256: str | None = None


class NetworkSection(BaseModel):
    """``[network]``: where the coordinator is and this party's mutual-TLS files.

    The peer is named either by ``peer`` and ``peer_box_public`` (two parties; P always), or,
    for E with one or more passive parties, by one ``[[network.partners]]`` entry each; E then
    keeps each partner's alignment and shard under ``<out>/partners/<name>/``.
    """

    model_config = _FROZEN

    coordinator: HostPort = "127.0.0.1:50051"
    ca: ConfigPath
    cert: ConfigPath
    key: ConfigPath
    timeout_s: PositiveFloat = 60.0  # one message from the peer
    connect_timeout_s: PositiveFloat = 30.0  # dialling the coordinator at the start
    peer: str | None = None  # the other party's name (its certificate CN)
    box_key: ConfigPath | None = None  # own X25519 sealing key (private, 32 bytes)
    peer_box_public: ConfigPath | None = None  # the other party's pinned sealing public key
    heartbeat_s: PositiveFloat = 1.0  # how often this party pings the coordinator
    lost_after_s: PositiveFloat = 5.0  # peer silent this long while awaited = peer lost
    # optional: the SHA-256 of the peer's data schema, checked at the handshake
    peer_schema_sha256: str | None = None
    partners: tuple[PartnerSection, ...] = ()  # E only: its passive parties, in place of peer

    @model_validator(mode="after")
    def _tls_files_fit(self) -> NetworkSection:
        """CA, certificate and key parse, match, are valid now, and the CA issued the cert."""
        check_tls_files(self.ca, self.cert, self.key)
        return self

    @model_validator(mode="after")
    def _one_form_of_peers(self) -> NetworkSection:
        """Either ``peer`` (and its keys) or ``[[network.partners]]``, each name once."""
        single = [k for k in ("peer", "peer_box_public", "peer_schema_sha256") if getattr(self, k)]
        if self.partners and single:
            raise rule_error(
                f"both '{single[0]}' and [[network.partners]] are set",
                "name the peers one way: remove peer, peer_box_public and peer_schema_sha256, "
                "or the [[network.partners]] entries",
                single[0],
            )
        repeated = [n for n, c in Counter(p.name for p in self.partners).items() if c > 1]
        if repeated:
            raise rule_error(
                f"partner '{repeated[0]}' is listed twice",
                "list each passive party once in [[network.partners]]",
                "partners",
            )
        return self

    @property
    def several(self) -> bool:
        """Whether the peers are listed as ``[[network.partners]]`` (E's per-partner layout)."""
        return bool(self.partners)

    def peers(self) -> tuple[PartnerSection, ...]:
        """Every peer of this party: the ``partners``, or the one ``peer`` (none if unset)."""
        if self.partners:
            return self.partners
        if self.peer is None or self.peer_box_public is None:
            return ()
        one = PartnerSection.model_construct(
            name=self.peer, box_public=self.peer_box_public, schema_sha256=self.peer_schema_sha256
        )
        return (one,)


def read_network_pems(net: NetworkSection) -> tuple[bytes, bytes, bytes]:
    """``(ca_pem, cert_pem, key_pem)`` read from the files named in ``[network]``.

    Raises:
        VflError: a file vanished or became unreadable after the config was loaded.
    """
    return read_pem_files("network", net.ca, net.cert, net.key)


class ExecutorSection(BaseModel):
    """``[executor]``: this party's own executor for PSI blinding and batched Paillier work
    (products, decryptions, randomness pools). Without the section a party keeps the local
    pools that ``[psi] workers`` and ``[train] crypto_workers`` size; with it, all of that work
    goes to the one executor named here (see ``docs/scaling.md``)."""

    model_config = _FROZEN

    kind: ExecutorKind = ExecutorKind.LOCAL
    address: str = "local"
    num_cpus: PositiveInt | None = None
    chunk_size: PositiveInt = DEFAULT_TASK_CHUNK
    max_retries: Annotated[int, Field(ge=0)] = 3

    @model_validator(mode="after")
    def _address_form(self) -> ExecutorSection:
        """``local``, ``auto`` or ``ray://HOST:PORT``."""
        address = self.address
        if address not in ("local", "auto") and not (
            address.startswith("ray://") and _HOST_PORT.match(address.removeprefix("ray://"))
        ):
            raise rule_error(
                f"'{address}' is not a Ray address",
                'write "local" (start one on this machine), "auto" (join `ray start` here) '
                'or "ray://HOST:PORT"',
                "address",
            )
        return self

    def spec(self) -> ExecutorSpec:
        """The :class:`~vfl.executor.ExecutorSpec` of this section."""
        return ExecutorSpec(
            kind=self.kind,
            address=self.address,
            num_cpus=self.num_cpus,
            chunk_size=self.chunk_size,
            max_retries=self.max_retries,
        )


class ServingSection(BaseModel):
    """``[serving]`` (E only): ``vfl serve``'s HTTPS API and its ``z_B`` refresh schedule."""

    model_config = _FROZEN

    listen: BindAddress = "127.0.0.1:8443"
    tls_cert: ConfigPath  # the service's server certificate (PEM; SAN = the host callers dial)
    tls_key: ConfigPath  # its private key (PEM)
    token_file: ConfigPath  # the bearer token callers send (``Authorization: Bearer ...``)
    refresh_interval_s: NonNegativeFloat = 0.0  # 0: refresh at start and on POST /refresh only
    refresh_at_start: bool = True  # refresh once when the service starts (else: cached z_B)
    users_per_refresh_step: PositiveInt = 512  # users per encrypted forward of a refresh


class PartyConfig(BaseModel):
    """A whole party config file."""

    model_config = _FROZEN

    party: PartySection
    ids: IdRule = IdRule()
    users: FeatureSchema
    items: FeatureSchema | None = None
    interactions: InteractionSchema | None = None
    network: NetworkSection | None = None
    executor: ExecutorSection | None = None
    serving: ServingSection | None = None

    @property
    def role(self) -> Role:
        """Shortcut for ``party.role``."""
        return self.party.role

    @model_validator(mode="after")
    def _sections_match_role(self) -> PartyConfig:
        """Active needs [items] and [interactions]; passive must not have them."""
        if self.party.role is Role.PASSIVE and self.network and self.network.partners:
            raise rule_error(
                "[[network.partners]] is for the active party only",
                "a passive party works with E alone: name it with network.peer and "
                "network.peer_box_public",
                "network.partners",
            )
        if self.party.role is Role.PASSIVE and self.serving is not None:
            raise rule_error(
                "section not allowed for role 'passive'",
                "remove the [serving] section: P's `vfl serve` answers refreshes only",
                "serving",
            )
        for section in ("items", "interactions"):
            present = getattr(self, section) is not None
            if self.party.role is Role.ACTIVE and not present:
                raise rule_error(
                    "missing required section for role 'active'",
                    f"add an [{section}] section (the active party holds items and the log)",
                    section,
                )
            if self.party.role is Role.PASSIVE and present:
                raise rule_error(
                    "section not allowed for role 'passive'",
                    f'remove the [{section}] section, or set party.role = "active"',
                    section,
                )
        return self


def _reject_repeats(columns: tuple[str, ...], field: str) -> None:
    """Raise a rule error if a column name occurs twice in ``columns``."""
    repeated = [c for c, n in Counter(columns).items() if n > 1]
    if repeated:
        raise rule_error(
            f"column '{repeated[0]}' is listed twice",
            f"list each column once in '{field}'",
            field,
        )


def load_party_config(path: str | Path) -> PartyConfig:
    """Read and validate a party config TOML file.

    Raises:
        ConfigError: unreadable/invalid TOML, unknown key, wrong type, missing key or section,
            missing data file, sections not matching the role, repeated or clashing columns.
    """
    return load_toml_model(PartyConfig, path)
