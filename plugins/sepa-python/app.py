"""The `sepa` payment method, in Python: a euro credit transfer to an IBAN.

A wasmpay plugin in a second language, built with componentize-py from the repository's
`wit/` (world `payment-method`): `validate` checks the payee's IBAN (ISO 13616: country,
length, mod-97 check digits) and the amount limit, `quote_fee` charges a flat fee borne by
the payer. Configuration (the manifest's `[config]`, or the node's): `limit.EUR` and
`fee.EUR`, both in minor units. Integers only: money never touches a float.
"""

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import config, types

NAME = "sepa"
VERSION = "0.1.0"

# IBAN lengths of the SEPA countries this plugin serves (ISO 13616 registry).
IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "DE": 22, "ES": 24, "FI": 18, "FR": 27, "IE": 22,
    "IT": 27, "LU": 20, "NL": 18, "PT": 25,
}
DEFAULT_LIMIT = 10_000_000  # 100,000.00 EUR
DEFAULT_FEE = 20  # 0.20 EUR


def decline(code: str, message: str) -> Err:
    return Err(types.Rejection(code=code, message=message, retryable=False))


def setting(key: str, default: int) -> int:
    value = config.get(key)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 15:
        raise Err(types.Rejection(code="plugin_misconfigured", message=f"{key} must be a whole number of minor units", retryable=True))
    return int(value)


def valid_iban(iban: str) -> bool:
    # ASCII first: `upper()` maps some other letters to two ASCII ones ("ﬁ" to "FI").
    if not iban.isascii():
        return False
    compact = iban.replace(" ", "").upper()
    if len(compact) < 4 or IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    if not compact.isalnum() or not compact[2:4].isdigit() or not 2 <= int(compact[2:4]) <= 98:
        return False
    rearranged = compact[4:] + compact[:4]
    digits = "".join(str(int(char, 36)) for char in rearranged)
    return int(digits) % 97 == 1


def detail(payment: types.Payment, key: str) -> str:
    return next((value for name, value in payment.details if name == key), "")


class Plugin(exports.Plugin):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(name=NAME, version=VERSION, methods=[NAME], currencies=["EUR"])


class Validator(exports.Validator):
    def validate(self, payment: types.Payment) -> None:
        if payment.amount.currency != "EUR":
            raise decline("unsupported_currency", "a SEPA transfer is in euros")
        limit = setting("limit.EUR", DEFAULT_LIMIT)
        if payment.amount.minor_units > limit:
            raise decline("amount_over_limit", f"at most {limit} minor units")
        if not valid_iban(detail(payment, "iban")):
            raise decline("invalid_iban", "the iban detail is not a valid IBAN of a SEPA country")


class FeePolicy(exports.FeePolicy):
    def quote_fee(self, payment: types.Payment) -> types.FeeQuote:
        fee = setting("fee.EUR", DEFAULT_FEE)
        return types.FeeQuote(
            total=fee,
            lines=[types.FeeLine(label="transfer", minor_units=fee)],
            bearer=types.FeeBearer.PAYER,
        )
