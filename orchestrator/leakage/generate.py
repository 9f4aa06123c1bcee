"""Writes the audit's two corpora once: public training text (stdlib docstrings, Faker) and the private-like set.

Run `python -m orchestrator.leakage.generate` (needs the `dev` extra's `faker`); the files it writes ship with
the package, so the audit itself needs neither faker nor a particular Python patch release.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hsi.calibration import CORPUS as CALIBRATION
from orchestrator.leakage.corpus import CORPUS_DIR, PRIVATE_FILE, PUBLIC_FILE

PRIVATE_SEED = 20281  # the evaluation set
PUBLIC_SEED = 7  # the attacker's generated training text: another seed, other templates
PRIVATE_RECORDS = 200
PUBLIC_FAKER = 2500
PUBLIC_DOCSTRINGS = 3500

# Harvested in this order, members by name: the docstrings of the standard library the attacker (like anyone)
# has installed. Modules with import-time side effects (this, antigravity, turtle, idlelib) are left out.
STDLIB = (
    "abc argparse array ast asyncio base64 bisect bz2 calendar cmd codecs collections concurrent.futures "
    "configparser contextlib copy csv dataclasses datetime decimal difflib dis email email.message enum "
    "filecmp fnmatch fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html html.parser "
    "http.client http.cookies http.server imaplib inspect io ipaddress itertools json locale logging lzma "
    "mailbox math mimetypes numbers operator optparse os pathlib pdb pickle plistlib poplib pprint queue "
    "random re sched secrets selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl "
    "statistics string struct subprocess tarfile tempfile textwrap threading timeit tokenize trace traceback "
    "typing unittest urllib.parse urllib.request uuid warnings wave weakref xml.dom.minidom xml.etree.ElementTree "
    "xmlrpc.client zipfile zlib"
).split()

DIAGNOSES = (
    "type 2 diabetes", "essential hypertension", "chronic kidney disease stage 3", "atrial fibrillation",
    "community-acquired pneumonia", "major depressive disorder", "generalized anxiety disorder", "asthma",
    "chronic obstructive pulmonary disease", "congestive heart failure", "hypothyroidism", "rheumatoid arthritis",
    "osteoarthritis of the knee", "migraine without aura", "iron deficiency anemia", "acute appendicitis",
    "deep vein thrombosis", "pulmonary embolism", "multiple sclerosis", "Parkinson's disease", "epilepsy",
    "breast cancer", "prostate cancer", "colorectal cancer", "hepatitis C", "HIV infection", "celiac disease",
    "Crohn's disease", "ulcerative colitis", "gout", "psoriasis", "bipolar disorder", "schizophrenia",
    "alcohol use disorder", "opioid use disorder", "urinary tract infection", "sepsis", "stroke",
    "myocardial infarction", "sleep apnea",
)
MEDICATIONS = (
    "metformin 500 mg", "lisinopril 10 mg", "atorvastatin 40 mg", "apixaban 5 mg", "sertraline 50 mg",
    "levothyroxine 75 mcg", "methotrexate 15 mg", "albuterol", "furosemide 40 mg", "insulin glargine",
    "amoxicillin 875 mg", "prednisone 20 mg", "buprenorphine", "lithium 300 mg", "tamoxifen 20 mg",
)

# Evaluation templates: {field} is sensitive (its span is recorded), [field] is not.
CLINICAL = (
    "{name}, a [age]-year-old [sex], was admitted on {date} with {diagnosis} and discharged on {date2} on [drug].",
    "Follow-up visit for {name} on {date}: {diagnosis} is stable; continue [drug] and recheck in [weeks] weeks.",
    "Dr. {name2} saw {name} on {date} for {diagnosis}. A copay of {amount} was charged to the patient.",
    "Referral: {name}, born {dob}, was diagnosed with {diagnosis} on {date}; insurance account {account}.",
    "Nursing note {date}: {name} reports worsening symptoms of {diagnosis}; started [drug] twice daily.",
)
BANK = (
    "Dear {name}, a transfer of {amount} from account {account} to {name2} is scheduled for {date}.",
    "Alert: {amount} was withdrawn from account {account} on {date} at [company]. Was this you, {first}?",
    "{name} applied for a loan of {amount} on {date}; salary deposits into account {account} are {amount2}.",
    "Hi {first}, your mortgage payment of {amount} for account {account} is due on {date}.",
    "Wire of {amount} to {name2} flagged on {date}: beneficiary account {account} was opened last week.",
)
LABELS = {"name": "name", "name2": "name", "first": "name", "date": "date", "date2": "date", "dob": "date",
          "amount": "amount", "amount2": "amount", "diagnosis": "diagnosis", "account": "account"}


def _fields(fake: Any) -> dict[str, Callable[[], str]]:
    def day() -> str:
        d = fake.date_between("-4y", "today")
        return str(fake.random_element((d.strftime("%B %-d, %Y"), d.strftime("%m/%d/%Y"), d.isoformat())))

    return {
        "name": fake.name, "name2": fake.name, "first": fake.first_name, "date": day, "date2": day,
        "dob": lambda: fake.date_of_birth(minimum_age=18, maximum_age=90).strftime("%m/%d/%Y"),
        "amount": fake.pricetag, "amount2": fake.pricetag, "account": lambda: fake.numerify("#" * 10),
        "diagnosis": lambda: str(fake.random_element(DIAGNOSES)), "age": lambda: str(fake.random_int(19, 92)),
        "sex": lambda: str(fake.random_element(("man", "woman"))),
        "drug": lambda: str(fake.random_element(MEDICATIONS)),
        "weeks": lambda: str(fake.random_int(2, 12)), "company": fake.company,
    }


def fill(template: str, fields: dict[str, Callable[[], str]]) -> tuple[str, list[dict[str, Any]]]:
    """The template with every {field} and [field] filled, and the character spans of the {field}s."""
    text, spans, pos = "", [], 0
    for m in re.finditer(r"\{(\w+)\}|\[(\w+)\]", template):
        text += template[pos:m.start()]
        key = m.group(1) or m.group(2)
        value = fields[key]()
        if m.group(1):
            spans.append({"start": len(text), "end": len(text) + len(value), "label": LABELS[key]})
        text += value
        pos = m.end()
    return text + template[pos:], spans


def private_records(n: int = PRIVATE_RECORDS, seed: int = PRIVATE_SEED) -> list[dict[str, Any]]:
    """Clinical notes and bank messages, alternating, with the spans of names, dates, amounts, diagnoses and
    account numbers."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    fields = _fields(fake)
    out = []
    for i in range(n):
        kind, templates = ("clinical", CLINICAL) if i % 2 == 0 else ("bank", BANK)
        text, spans = fill(str(fake.random_element(templates)), fields)
        out.append({"id": i, "kind": kind, "text": text, "spans": spans})
    return out


def _docstrings() -> Iterator[str]:
    for name in STDLIB:
        module = importlib.import_module(name)
        yield inspect.getdoc(module) or ""
        for _, member in inspect.getmembers(module):
            if inspect.isclass(member) or inspect.isfunction(member) or inspect.isbuiltin(member):
                yield inspect.getdoc(member) or ""
                if inspect.isclass(member):
                    for _, meth in inspect.getmembers(member, inspect.isfunction):
                        yield inspect.getdoc(meth) or ""


def docstring_sentences(limit: int = PUBLIC_DOCSTRINGS) -> list[str]:
    """Prose sentences of the standard library's docstrings, first seen first, without code or duplicates."""
    seen: set[str] = set()
    out: list[str] = []
    for doc in _docstrings():
        for para in re.split(r"\n\s*\n", doc):
            if re.search(r">>>|^\s{2,}|::\s*$", para, re.M):
                continue
            flat = " ".join(para.split())
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
                letters = sum(c.isalpha() or c == " " for c in sentence)
                if 30 <= len(sentence) <= 240 and letters >= 0.85 * len(sentence) and sentence not in seen:
                    seen.add(sentence)
                    out.append(sentence)
                    if len(out) == limit:
                        return out
    return out


PUBLIC_TEMPLATES = (
    "[name] works as a [job] at [company] in [city].",
    "On [date], [name] paid [amount] to [company] for [bs].",
    "Please call [first] at [phone] before [date] about the [word] report.",
    "[company] announced [catch] and expects revenue of [amount] next year.",
    "The invoice dated [date] lists [amount] owed by [name], [street], [city].",
    "[first] moved to [city] in [year] and opened a savings account with [amount].",
    "[sentence] [sentence]",
    "[name] was born on [date] and lives at [street] in [city].",
)


def faker_sentences(n: int = PUBLIC_FAKER, seed: int = PUBLIC_SEED) -> list[str]:
    """Generated everyday sentences about people, companies, places, dates and amounts (not the eval templates)."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    f = _fields(fake)
    fields: dict[str, Callable[[], str]] = {
        "name": fake.name, "first": fake.first_name, "job": fake.job, "company": fake.company, "city": fake.city,
        "date": f["date"], "amount": fake.pricetag, "bs": fake.bs, "phone": fake.phone_number, "word": fake.word,
        "catch": lambda: str(fake.catch_phrase()).lower(), "street": fake.street_address, "year": fake.year,
        "sentence": fake.sentence,
    }
    return [fill(str(fake.random_element(PUBLIC_TEMPLATES)), fields)[0] for _ in range(n)]


def public_sentences() -> list[str]:
    """Docstring and Faker sentences interleaved (so any prefix mixes both), calibration sentences excluded."""
    docs, fakes = docstring_sentences(), faker_sentences()
    mixed: list[str] = []
    for i in range(max(len(docs), len(fakes))):
        mixed += [s for s in (docs[i] if i < len(docs) else None, fakes[i] if i < len(fakes) else None) if s]
    return [s for s in mixed if s not in CALIBRATION]


def write(directory: Path = CORPUS_DIR) -> None:
    """Write both corpora (what ships in orchestrator/leakage/corpus/)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PUBLIC_FILE).write_text("".join(s + "\n" for s in public_sentences()))
    (directory / PRIVATE_FILE).write_text("".join(json.dumps(r) + "\n" for r in private_records()))


if __name__ == "__main__":
    write()
