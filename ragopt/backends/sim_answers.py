"""Valid, deterministic answers to the prompts of the pinned LightRAG and RAG-Anything.

The simulated LLM must answer what a real model would, in the format the caller
parses: extraction records in LightRAG 1.4.16's delimiter format, keyword JSON,
merged summaries, query answers, and the JSON that RAG-Anything's modal
processors expect. Every answer is derived from the prompt text alone, so the
same input always builds the same graph, and longer input yields more entities
and therefore more output tokens (which is what sets the simulated latency).

``respond(prompt, system_prompt, history_messages) -> (kind, text)`` is the entry
point; ``classify`` names the prompt kind alone.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from lightrag.constants import DEFAULT_ENTITY_TYPES, GRAPH_FIELD_SEP
from lightrag.prompt import PROMPTS as LIGHTRAG_PROMPTS
from lightrag.utils import normalize_extracted_info

from ragopt.backends.prompt_kinds import _GENERIC_MODAL, _VLM_QUESTION_MARKER, classify

TUPLE_DELIMITER = LIGHTRAG_PROMPTS["DEFAULT_TUPLE_DELIMITER"]
COMPLETION_DELIMITER = LIGHTRAG_PROMPTS["DEFAULT_COMPLETION_DELIMITER"]

_STOPWORDS = frozenset("""
a about above after again against all also although am among an and any are as at be because been
before being below between both but by can could did do does doing down during each either else
even ever every few for from further had has have having he her here hers herself him himself his
how however i if in into is it its itself just least less like made make many may me meanwhile
might more most much must my myself neither never no nor not now of off often on once one only or
other others otherwise our ours ourselves out over own per perhaps rather same shall she should
since so some such than that the their theirs them themselves then there therefore these they this
those though through thus to too under until up upon us used using very via was we were what when
where whether which while who whom whose why will with within without would yet you your yours
yourself yourselves figure table section chapter page based within also each new first second
third well still however moreover furthermore another many several various mr mrs ms dr
sir yes oh please toward towards
""".split())

_CAPITALIZED_RUN = re.compile(
    r"\b[A-Z][A-Za-z0-9\-]*[A-Za-z0-9]?(?:\s+(?:(?:of|for|de)\s+)?[A-Z][A-Za-z0-9\-]*[A-Za-z0-9]?)*"
)
_LOWER_WORD = re.compile(r"\b[a-z][a-z\-]{3,}[a-z]\b")
_ANY_WORD = re.compile(r"[A-Za-z][A-Za-z\-]+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_VERB_OR_ADVERB = re.compile(r"(?:ed|ing|ly)$")  # frequent, but rarely an entity

# Words in a name that hint at its type; the hint is then mapped to the types
# the caller configured (LightRAG rejects nothing, but the brief of a valid
# answer is to use only those).
_TYPE_CUES: Tuple[Tuple[str, frozenset], ...] = (
    ("Organization", frozenset("inc corp corporation company university institute agency bank "
                               "federation association committee council ministry department "
                               "foundation group laboratory society reserve party technologies "
                               "labs consortium".split())),
    ("Location", frozenset("city river mountain island county state republic kingdom lake ocean "
                           "sea valley street park country province region".split())),
    ("Event", frozenset("championship war conference summit festival election olympics revolution "
                        "crisis meeting cup games announcement workshop launch monday tuesday "
                        "wednesday thursday friday saturday sunday january february march april "
                        "june july august september october november december".split())),
    ("Method", frozenset("method algorithm protocol technique process framework approach "
                         "procedure pipeline strategy".split())),
    ("Artifact", frozenset("device system tool machine engine platform software spikes product "
                           "model library".split())),
    ("Data", frozenset("data dataset table index rate statistics record benchmark metric "
                       "score".split())),
)

# A model names about one entity per 20 words and as many relations, up to a
# bound however long the chunk: output grows with input, at about 1-2x its tokens.
_WORDS_PER_ENTITY = 20
_MIN_ENTITIES = 3
_MAX_ENTITIES = 25
_GLEAN_RECORDS = 5  # a second look adds a few entities and relations
_DESCRIPTION_WORDS = 20


def respond(
    prompt: str,
    system_prompt: Optional[str] = None,
    history_messages: Optional[Sequence[dict]] = None,
) -> Tuple[str, str]:
    """Return (kind, answer text) for one request."""
    kind = classify(prompt, system_prompt)
    if kind == "extract":
        return kind, _extraction_answer(prompt, glean=False)
    if kind == "glean":
        first_request = _first_user_message(history_messages)
        return kind, _extraction_answer(first_request, glean=True)
    if kind == "summary":
        return kind, _summary_answer(prompt)
    if kind == "keywords":
        return kind, _keywords_answer(prompt)
    if kind == "query":
        return kind, _query_answer(prompt, system_prompt or "")
    if kind in ("table", "equation", "image", "modal"):
        return kind, _modal_answer(kind, prompt)
    if kind == "describe":
        return kind, _describe_answer(prompt)
    return kind, _generic_answer(prompt)


# ---------------------------------------------------------------- text analysis


def _clean(text: str, max_words: int = _DESCRIPTION_WORDS) -> str:
    """One line, no delimiter characters, at most max_words words."""
    text = re.sub(r"[<>|`#*]", " ", text.replace(GRAPH_FIELD_SEP, " "))
    words = text.split()
    clipped = " ".join(words[:max_words])
    return clipped + (" ..." if len(words) > max_words else "")


def _sentences(text: str) -> List[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip() for p in parts if _ANY_WORD.search(p)]


def _content_words(text: str) -> List[str]:
    return [w for w in _ANY_WORD.findall(text) if len(w) > 2 and w.lower() not in _STOPWORDS]


def _normalized(name: str) -> str:
    return normalize_extracted_info(name, remove_inner_quotes=True)


@dataclass
class _Entity:
    name: str
    type: str
    pattern: re.Pattern
    proper: bool  # a capitalized name rather than a frequent common word
    mentions: List[int] = field(default_factory=list)  # sentence indexes


def _capitalized_names(sentences: List[str]) -> List[str]:
    """Capitalized phrases, split at stopwords ('Then Taylor' -> 'Taylor').

    A single word at the start of a sentence is a name only if it is also
    capitalized mid-sentence somewhere ('Stock markets fell' is no entity).
    """
    pieces: List[Tuple[str, bool]] = []  # (name, opens its sentence)
    for sentence in sentences:
        for run in _CAPITALIZED_RUN.finditer(sentence):
            initial = not re.search(r"\w", sentence[: run.start()])  # quotes may precede it
            current: List[str] = []
            for word in run.group().split():
                if word.lower() in _STOPWORDS and word[0].isupper():
                    if current:
                        pieces.append((" ".join(current), initial))
                    current, initial = [], False
                else:
                    current.append(word)
            if current:
                pieces.append((" ".join(current), initial))
    mid_sentence = {name for name, initial in pieces if not initial}
    names = []
    for name, initial in pieces:
        name = re.sub(r"\s+(?:of|for|de)$", "", name.strip("-"))
        if len(name) < 2 or (initial and " " not in name and name not in mid_sentence):
            continue
        names.append(name)
    # 'Space' is no entity of its own when 'European Space Agency' is one.
    inner_words = {w for name in names if " " in name for w in name.split()}
    return [n for n in names if " " in n or n not in inner_words]


def _frequent_words(text: str, taken: set) -> List[str]:
    """Lower-case content words said at least twice, title-cased as names."""
    counts = Counter(
        w for w in _LOWER_WORD.findall(text)
        if w not in _STOPWORDS and not _VERB_OR_ADVERB.search(w)
    )
    return [w.title() for w, n in counts.items() if n >= 2 and w not in taken]


def _type_hint(name: str, text: str, capitalized: bool) -> str:
    words = set(name.lower().replace("-", " ").split())
    for hint, cues in _TYPE_CUES:
        if words & cues:
            return hint
    if any(c.isdigit() for c in name):
        return "Artifact"  # 'Sentinel-6', 'GPT-4'
    if capitalized and re.search(rf"\b(?:in|at|from|near)\s+{re.escape(name)}\b", text):
        return "Location"
    if capitalized and not name.isupper() and len(words) <= 2:
        return "Person"
    return "Concept"


def _configured_type(hint: str, name: str, entity_types: List[str]) -> str:
    """The configured spelling of the hinted type, else of Concept/Other, else a stable pick."""
    by_key = {t.replace(" ", "").lower(): t for t in entity_types}
    for wanted in (hint, "Concept", "Other"):
        if wanted.lower() in by_key:
            return by_key[wanted.lower()]
    return entity_types[sum(map(ord, name)) % len(entity_types)]


def _entities(text: str, entity_types: List[str]) -> Tuple[List[_Entity], List[str]]:
    """Candidate entities, most mentioned first, and the sentences of the text."""
    text = _URL.sub(" ", text)  # 'Https' and 'Gov' are no entities
    sentences = _sentences(text)
    found: Dict[str, _Entity] = {}
    capitalized = _capitalized_names(sentences)
    taken = {w.lower() for name in capitalized for w in name.split()}
    for name, is_cap in [(n, True) for n in capitalized] + [
        (n, False) for n in _frequent_words(text, taken)
    ]:
        name = _normalized(name)
        if not name or name.lower() in found:
            continue
        flags = 0 if is_cap else re.IGNORECASE
        hint = _type_hint(name, text, is_cap)
        found[name.lower()] = _Entity(
            name=name,
            type=_configured_type(hint, name, entity_types),
            pattern=re.compile(rf"\b{re.escape(name)}\b", flags),
            proper=is_cap,
        )
    for index, sentence in enumerate(sentences):
        for entity in found.values():
            if entity.pattern.search(sentence):
                entity.mentions.append(index)
    ranked = [e for e in found.values() if e.mentions]
    # Names outrank common words said as often; ties go to the earlier one.
    ranked.sort(key=lambda e: (-len(e.mentions) - e.proper, e.mentions[0]))
    return ranked, sentences


def _relations(
    entities: List[_Entity], sentences: List[str], done: set
) -> List[Tuple[_Entity, _Entity, int]]:
    """Pairs of entities next to each other in a sentence, first sentence wins."""
    pairs = []
    for index, sentence in enumerate(sentences):
        present = [e for e in entities if index in e.mentions]
        present.sort(key=lambda e: e.pattern.search(sentence).start())
        for a, b in zip(present, present[1:]):
            key = frozenset((a.name, b.name))
            if len(key) == 2 and key not in done:
                done.add(key)
                pairs.append((a, b, index))
    return pairs


# -------------------------------------------------------------- LightRAG answers


def _first_user_message(history_messages: Optional[Sequence[dict]]) -> str:
    for message in history_messages or ():
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


def _input_text_and_types(prompt: str) -> Tuple[str, List[str]]:
    text = re.search(r"<Input Text>\s*```\n?(.*)\n?```\s*<Output>", prompt, re.DOTALL)
    types = re.search(r"<Entity_types>\s*\[(.*?)\]", prompt, re.DOTALL)
    entity_types = [t.strip().strip("\"'") for t in types.group(1).split(",")] if types else []
    return (text.group(1) if text else ""), [t for t in entity_types if t] or list(
        DEFAULT_ENTITY_TYPES
    )


def _extraction_answer(prompt: str, glean: bool) -> str:
    """Entity and relation records; gleaning adds a few of the lower-ranked rest, if any.

    The first pass names a budget of entities that grows with the text, and at
    most 80% of the candidates, so that gleaning, like a real model's second
    look, usually finds a few more.
    """
    text, entity_types = _input_text_and_types(prompt)
    ranked, sentences = _entities(text, entity_types)
    budget = len(_ANY_WORD.findall(text)) // _WORDS_PER_ENTITY
    budget = min(_MAX_ENTITIES, max(_MIN_ENTITIES, budget))
    first_count = min(budget, len(ranked) - len(ranked) // 5)
    first = ranked[:first_count]
    first_relations = _relations(first, sentences, set())[:first_count]
    if glean:
        extra = ranked[first_count : first_count + _GLEAN_RECORDS]
        done = {frozenset((a.name, b.name)) for a, b, _ in first_relations}
        relations = [
            r for r in _relations(first + extra, sentences, done) if r[0] in extra or r[1] in extra
        ][:_GLEAN_RECORDS]
        entities = extra
    else:
        entities, relations = first, first_relations
    lines = [
        TUPLE_DELIMITER.join(
            ["entity", e.name, e.type,
             f"{e.name} ({e.type}) is described in the text: {_clean(sentences[e.mentions[0]])}"]
        )
        for e in entities
    ]
    for a, b, index in relations:
        names = {w.lower() for w in f"{a.name} {b.name}".split()}
        keywords = [
            w for w in _LOWER_WORD.findall(sentences[index]) if w not in _STOPWORDS | names
        ]
        lines.append(
            TUPLE_DELIMITER.join(
                ["relation", a.name, b.name, ", ".join(dict.fromkeys(keywords[:2])) or "related",
                 f"{a.name} and {b.name} are connected in the text: {_clean(sentences[index])}"]
            )
        )
    lines.append(COMPLETION_DELIMITER)
    return "\n".join(lines)


def _summary_answer(prompt: str) -> str:
    """A shorter merged description: each distinct first sentence, within the length limit."""
    name = re.search(r"---Input---\s*\n(?:Entity|Relation) Name: (.*)", prompt)
    limit = re.search(r"must not exceed (\d+) tokens", prompt)
    block = re.search(r"Description List:\s*```\n(.*?)\n```", prompt, re.DOTALL)
    firsts: List[str] = []
    for line in (block.group(1) if block else "").splitlines():
        try:
            description = json.loads(line).get("Description", "")
        except (ValueError, AttributeError):
            continue
        sentence = (_sentences(description) or [""])[0]
        if sentence and sentence not in firsts:
            firsts.append(sentence)
    max_words = int(int(limit.group(1)) * 0.75) if limit else 300
    subject = name.group(1).strip() if name else "The subject"
    merged = " ".join(firsts)
    return _clean(merged if merged.startswith(subject) else f"{subject}: {merged}", max_words)


def _keywords_answer(prompt: str) -> str:
    """High level: runs of lower-case content words; low level: names, then single words."""
    found = re.findall(r"User Query:\s*(.*?)\s*---Output---", prompt, re.DOTALL)
    query = found[-1] if found else ""
    runs: List[List[str]] = [[]]
    for word in _ANY_WORD.findall(query):
        if word.islower() and word not in _STOPWORDS and len(word) > 2:
            runs[-1].append(word)
        elif runs[-1]:
            runs.append([])
    words = [w for run in runs for w in run]
    names = _capitalized_names(_sentences(query))
    high = [" ".join(run[:3]) for run in runs if len(run) >= 2][:3] or (words or names)[:2]
    low = list(dict.fromkeys(names + words))[:6]
    return json.dumps({"high_level_keywords": high, "low_level_keywords": low})


def _query_answer(prompt: str, system_prompt: str) -> str:
    """Markdown answer from the context sentences that best match the query, with references."""
    question = prompt.split(_VLM_QUESTION_MARKER)[-1]
    query_words = {w.lower() for w in _content_words(question)}
    context = system_prompt + "\n" + prompt
    texts = _json_string_values(context, ("content", "description")) or [context]
    scored = []
    for sentence in (s for text in texts for s in _sentences(text)):
        overlap = len(query_words & {w.lower() for w in _content_words(sentence)})
        if overlap:
            scored.append((-overlap, len(scored), sentence))
    if not scored:
        return "I do not have enough information in the provided context to answer this question."
    best = [_clean(s, 60) for _, _, s in sorted(scored)[:3]]
    references = re.findall(r"^\[(\d+)\]\s+(.+)$", system_prompt, re.MULTILINE)[:5]
    answer = "### Answer\n\n" + "\n\n".join(best)
    if references:
        answer += "\n\n### References\n\n" + "\n".join(f"- [{n}] {t}" for n, t in references)
    return answer


def _json_string_values(text: str, keys: Tuple[str, ...]) -> List[str]:
    """The string values of the given keys in JSON lines embedded in a prompt."""
    values = []
    pattern = rf'"(?:{"|".join(keys)})":\s*"((?:[^"\\]|\\.)*)"'
    for raw in re.findall(pattern, text):
        try:
            values.append(json.loads(f'"{raw}"', strict=False))
        except ValueError:
            values.append(raw)
    return values


# --------------------------------------------------------- RAG-Anything answers


def _field(prompt: str, label: str, until: str = r"\n") -> str:
    """The value after 'label:' at a line start; a list's repr becomes its items joined."""
    match = re.search(rf"^{label}:\s*(.*?)(?:{until})", prompt + "\n", re.MULTILINE | re.DOTALL)
    value = match.group(1).strip() if match else ""
    if value.startswith("[") and value.endswith("]"):  # captions arrive as "['Figure 1: ...']"
        value = "; ".join(a or b for a, b in re.findall(r"'([^']*)'|\"([^\"]*)\"", value))
    return "" if value == "None" else value


def _modal_name(prompt: str, fallback: str) -> str:
    """The caller's entity name, or a semantic one when the template shows its placeholder."""
    given = re.search(r'"entity_name":\s*"([^"]*)"', prompt)
    if given and not given.group(1).startswith(("descriptive name for", "unique descriptive name")):
        return given.group(1)
    return _clean(fallback, 8).strip(" .:[]'\"") or "Untitled"


def _table_rows(body: str) -> List[List[str]]:
    """The cells of each row of a Markdown or HTML table, separator rows left out."""
    rows = []
    for line in re.split(r"</tr>|\n", body):
        cells = [c.strip() for c in re.sub(r"<[^>]+>", "|", line).split("|")]
        cells = [c for c in cells if c and not set(c) <= set("-: ")]
        if cells and re.search(r"\||<t[dh]", line):
            rows.append(cells)
    return rows


def _table_facts(prompt: str) -> Tuple[str, str, str]:
    rows = _table_rows(_field(prompt, "Body", r"\nFootnotes:"))
    header, data = (rows[0], rows[1:]) if rows else ([], [])
    name = _field(prompt, "Caption") or (
        f"Table of {', '.join(header[:3])}" if header else "Data Table"
    )
    description = (
        f"The table {name} has {len(data)} data rows and {len(header)} columns"
        f" ({', '.join(header) or 'unnamed'})."
    )
    samples = "; ".join(", ".join(f"{h} = {v}" for h, v in zip(header, row)) for row in data[:3])
    if samples:
        description += f" Sample rows: {samples}."
    summary = f"{name} lists {', '.join(header[:4]) or 'values'} over {len(data)} rows."
    return name, description, summary


def _equation_facts(prompt: str) -> Tuple[str, str, str]:
    equation = _field(prompt, "Equation", r"\nFormat:")
    fmt = _field(prompt, "Format") or "text"
    # Single-letter symbols with an optional subscript; LaTeX commands are not symbols.
    symbols = list(dict.fromkeys(
        re.findall(r"(?<![\\A-Za-z])[A-Za-z](?:_\{[^}]*\}|_\w)?(?![A-Za-z])", equation)
    ))[:8]
    name = f"Equation {_clean(equation, 6)}"
    description = (
        f"The equation {equation} is written in {fmt} format. It relates the symbols "
        f"{', '.join(symbols) or 'shown'} through the operations it contains."
    )
    summary = f"{name} defines a relation between {', '.join(symbols[:4]) or 'its terms'}."
    return name, description, summary


def _image_facts(prompt: str) -> Tuple[str, str, str]:
    path = _field(prompt, "- Image Path") or _field(prompt, "Image Path")
    captions = _field(prompt, "- Captions") or _field(prompt, "Captions")
    footnotes = _field(prompt, "- Footnotes") or _field(prompt, "Footnotes")
    stem = re.sub(r"[_\-]+", " ", path.rsplit("/", 1)[-1].rsplit(".", 1)[0]).title()
    name = captions or stem or "Image"
    description = (
        f"The image {name} (file {path or 'unknown'}) shows the content its caption names: "
        f"{captions or 'no caption'}. Footnotes: {footnotes or 'none'}."
    )
    return name, description, f"{name} is a figure in the document."


def _generic_facts(prompt: str) -> Tuple[str, str, str]:
    content_type = _GENERIC_MODAL.search(prompt).group(1)
    content = _field(prompt, "Content", r"\n\nFocus on")
    description = f"The {content_type} content reads: {_clean(content, 60)}"
    return f"{content_type.title()} {_clean(content, 5)}", description, _clean(description, 25)


_MODAL_FACTS = {
    "table": _table_facts, "equation": _equation_facts,
    "image": _image_facts, "modal": _generic_facts,
}


def _modal_answer(kind: str, prompt: str) -> str:
    """The JSON RAG-Anything parses: detailed_description plus entity_info."""
    name, description, summary = _MODAL_FACTS[kind](prompt)
    entity_type = re.search(r'"entity_type":\s*"([^"]*)"', prompt)
    context = _field(prompt, "Context from surrounding content", r"\n\n")
    if context:
        description = f"{description.rstrip()} In its context: {_clean(context)}"
    return json.dumps({
        "detailed_description": description,
        "entity_info": {
            "entity_name": _modal_name(prompt, name),
            "entity_type": entity_type.group(1) if entity_type else kind,
            "summary": summary,
        },
    }, ensure_ascii=False)


def _describe_answer(prompt: str) -> str:
    """A short plain-text description of the data lines, leaving out the instructions."""
    data = " ".join(line for line in prompt.splitlines() if not line.startswith("Please"))
    if not data.strip():
        return "The content shows its main elements and the key information they carry."
    return f"The content covers: {_clean(data, 40)}"


def _generic_answer(prompt: str) -> str:
    return f"Simulated answer to: {_clean(prompt, 20)}"
