"""The GRC vocabulary (grc_synonyms.txt) and the keyword query built from a question.

One data file, two uses: locally a question's words found in a rule are expanded to every term of
that rule before the SQLite FTS5 query runs; on Azure AI Search the same rules are the synonym map
the searchable field references, so the service expands them itself. A question is reduced to its
content words (stop words and analyst filler dropped, at most MAX_CLAUSES of them) and the clauses
are OR-ed: BM25 ranks documents matching more of them first, as Azure's `searchMode=any` does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SYNONYMS_FILE = Path(__file__).with_name("grc_synonyms.txt")
SYNONYM_MAP_NAME = "grc-synonyms"
MAX_TERMS_PER_RULE = 20  # Azure AI Search's limit of expansions per rule
MAX_CLAUSES = 32  # a question of 1,000 characters stays a bounded keyword query
GLOSS_MAX_CHARS = 5  # a one-word vocabulary term this short is taken for an acronym (gloss)
TERM = re.compile(r"[a-z0-9](?:[a-z0-9 '/-]*[a-z0-9])?")
_WORD = re.compile(r"[a-z0-9]+")

# English stop words and the words analysts wrap a question in; they match nearly every event.
# Outcome words (failed, overdue, missing ...) and negations that carry the topic are NOT here.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be been before being below between
both but by can could did do does doing down during each few for from further had has have having he her
here hers him his how i if in into is it its itself just let me more most my no nor not now of off on once
only or other our ours out over own same she should so some such than that the their theirs them then there
these they this those through to too under until up very was we were what when where which while who whom
why will with would you your yours yet via per
show find list give get tell see look looking want need please ever still any anything something
event events record records item items thing things issue issues case cases
like kind sort type types
""".split()) - {"type"}


def _norm(token: str) -> str:
    """Light plural folding for matching a question against the rules (dsars ~ dsar, vulns ~ vuln)."""
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Rule:
    line: int
    terms: tuple[str, ...]


@lru_cache(maxsize=4)
def load_rules(path: Path = SYNONYMS_FILE) -> tuple[Rule, ...]:
    """Parse the synonym file; raises ValueError naming the line of a rule that breaks the format."""
    rules: list[Rule] = []
    seen: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=>" in line:
            raise ValueError(f"{path.name}:{number}: only equivalence rules are used, not '=>' mappings")
        terms = tuple(t.strip() for t in line.split(","))
        if len(terms) < 2 or len(terms) > MAX_TERMS_PER_RULE:
            raise ValueError(f"{path.name}:{number}: a rule has 2 to {MAX_TERMS_PER_RULE} terms")
        for term in terms:
            if not TERM.fullmatch(term):
                raise ValueError(f"{path.name}:{number}: term {term!r} is not lower-case letters, digits, "
                                 "spaces, hyphens, slashes or apostrophes")
            key = tuple(_norm(w) for w in words(term))
            if key in seen and seen[key] != number:
                raise ValueError(f"{path.name}:{number}: term {term!r} is already in the rule on line {seen[key]}")
            seen[key] = number
        rules.append(Rule(number, terms))
    return tuple(rules)


def solr_synonyms(path: Path = SYNONYMS_FILE) -> str:
    """The rules as Azure AI Search takes them (format solr): one rule a line, no comments."""
    return "\n".join(", ".join(rule.terms) for rule in load_rules(path))


@lru_cache(maxsize=4)
def _phrase_index(path: Path = SYNONYMS_FILE) -> dict[str, list[tuple[tuple[str, ...], Rule]]]:
    """First word of a term -> (its normalised words, its rule), longest first."""
    index: dict[str, list[tuple[tuple[str, ...], Rule]]] = {}
    for rule in load_rules(path):
        for term in rule.terms:
            key = tuple(_norm(w) for w in words(term))
            if key:
                index.setdefault(key[0], []).append((key, rule))
    for entries in index.values():
        entries.sort(key=lambda e: -len(e[0]))
    return index


@dataclass(frozen=True)
class KeywordQuery:
    """A question as keyword clauses: each clause is a set of alternative phrases (a rule's terms, or one
    word). `matched` are the rules the question used."""

    clauses: tuple[tuple[tuple[str, ...], ...], ...]
    matched: tuple[Rule, ...]

    def __bool__(self) -> bool:
        return bool(self.clauses)

    def fts5(self) -> str:
        """An FTS5 MATCH expression: every phrase quoted (no operator of the question survives), OR-ed."""
        phrases = dict.fromkeys(" ".join(p) for clause in self.clauses for p in clause)
        return " OR ".join(f'"{p}"' for p in phrases)


def keyword_query(question: str, path: Path = SYNONYMS_FILE) -> KeywordQuery:
    """Content words of a question, each vocabulary term among them expanded to its whole rule."""
    index = _phrase_index(path)
    tokens = words(question)
    normed = [_norm(t) for t in tokens]
    clauses: list[tuple[tuple[str, ...], ...]] = []
    matched: list[Rule] = []
    i = 0
    while i < len(tokens) and len(clauses) < MAX_CLAUSES:
        hit = next((entry for entry in index.get(normed[i], ())
                    if tuple(normed[i:i + len(entry[0])]) == entry[0]), None)
        if hit is not None:
            key, rule = hit
            if rule not in matched:
                matched.append(rule)
                clauses.append(tuple(tuple(words(term)) for term in rule.terms))
            i += len(key)
            continue
        token = tokens[i]
        i += 1
        # Lone short numbers ("2 hours") and single letters match everything and mean nothing alone.
        if token in STOPWORDS or len(token) < 2 or (token.isdigit() and len(token) < 3):
            continue
        clause = ((token,),)
        if clause not in clauses:
            clauses.append(clause)
    return KeywordQuery(tuple(clauses), tuple(matched))


def gloss(question: str, path: Path = SYNONYMS_FILE) -> str:
    """The question with the long form of each acronym it uses appended, for the embedding model, which
    has never seen "SoD" or "DPIA": 'SoD failures' -> 'SoD failures (segregation of duties)'. An
    acronym: a vocabulary term of one short word (at most GLOSS_MAX_CHARS), or one written with two
    capitals or more (ChatGPT)."""
    index = _phrase_index(path)
    spelled: list[str] = []
    for original in dict.fromkeys(re.findall(r"[A-Za-z0-9]+", question)):
        token = _norm(original.lower())
        if len(token) > GLOSS_MAX_CHARS and sum(c.isupper() for c in original) < 2:
            continue
        rule = next((r for key, r in index.get(token, ()) if key == (token,)), None)
        long_forms = [t for t in rule.terms if len(words(t)) > 1] if rule else []
        if long_forms:
            longest = max(long_forms, key=lambda t: len(words(t)))  # the first of the longest
            if longest not in spelled:
                spelled.append(longest)
    return f"{question} ({'; '.join(spelled)})" if spelled else question
