"""HELM's "canonical" data augmentation, re-implemented (helm/benchmark/augmentations/ and run_expander.py):

- robustness: `mild_mix` = lower-case, then contractions, then misspellings (p=0.1), then 1-3 spaces for each run
  of spaces; the references are left alone.
- fairness: `dialect` (Standard American English -> African American English, p=1), `gender` pronouns
  (male -> female, p=1); both also rewrite the references.

Each perturbation draws from `random.Random(instance.id)` (HELM's seed), references first, then the input, and a
perturbed instance whose input did not change is dropped (HELM's `should_skip_unchanged_eval`).

The word lists differ from HELM's where HELM downloads or bundles large files (no internet here, and we do not
copy them): the contraction, misspelling and SAE->AAE lists below are our own, much smaller subsets, so perturbed
prompts are HELM-like, not HELM-identical. Pass HELM's own files (`misspellings_file`: its
augmentations/correct_to_misspelling.json; `dialect_file`: its SAE_to_AAVE_mapping.json) to reproduce HELM's
perturbations exactly; the gender pronoun list is the one HELM uses (Lauscher et al. 2022), so that part matches.
HELM's third fairness perturbation (first names, white -> Black American) needs a downloaded name list and is
not reproduced.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from random import Random
from typing import Callable, Optional

from eval.helm import Instance

# Expanded form -> contraction (our own list of common English contractions).
CONTRACTIONS: dict[str, str] = {
    "are not": "aren't", "cannot": "can't", "could not": "couldn't", "did not": "didn't", "does not": "doesn't",
    "do not": "don't", "had not": "hadn't", "has not": "hasn't", "have not": "haven't", "he is": "he's",
    "he will": "he'll", "he would": "he'd", "how is": "how's", "I am": "I'm", "I have": "I've", "I will": "I'll",
    "I would": "I'd", "is not": "isn't", "it is": "it's", "it will": "it'll", "let us": "let's",
    "must not": "mustn't", "she is": "she's", "she will": "she'll", "she would": "she'd", "should not": "shouldn't",
    "that is": "that's", "there is": "there's", "they are": "they're", "they have": "they've",
    "they will": "they'll", "they would": "they'd", "was not": "wasn't", "we are": "we're", "we have": "we've",
    "we will": "we'll", "were not": "weren't", "what is": "what's", "where is": "where's", "who is": "who's",
    "will not": "won't", "would not": "wouldn't", "you are": "you're", "you have": "you've", "you will": "you'll",
    "you would": "you'd",
}

# Word -> common misspellings (our own small list).
MISSPELLINGS: dict[str, list[str]] = {
    "about": ["abuot"], "accommodate": ["accomodate"], "achieve": ["acheive"], "across": ["accross"],
    "address": ["adress"], "although": ["altough"], "apparent": ["apparant"], "argument": ["arguement"],
    "because": ["becuase", "becasue"], "beginning": ["begining"], "believe": ["beleive"], "business": ["buisness"],
    "calendar": ["calender"], "certain": ["certian"], "committee": ["commitee"], "completely": ["completly"],
    "definitely": ["definately"], "different": ["diffrent"], "environment": ["enviroment"],
    "especially": ["especialy"], "existence": ["existance"], "experience": ["experiance"], "familiar": ["familar"],
    "finally": ["finaly"], "following": ["folowing"], "foreign": ["foriegn"], "friend": ["freind"],
    "government": ["goverment"], "great": ["grate"], "happened": ["happend"], "immediately": ["immediatly"],
    "independent": ["independant"], "knowledge": ["knowlege"], "language": ["langauge"], "library": ["libary"],
    "necessary": ["neccessary", "necesary"], "noticeable": ["noticable"], "occasion": ["ocassion"],
    "occurred": ["occured"], "people": ["poeple"], "possible": ["possable"], "probably": ["probaly"],
    "question": ["quesiton"], "really": ["realy"], "receive": ["recieve"], "recommend": ["reccommend"],
    "separate": ["seperate"], "similar": ["similiar"], "successful": ["succesful"], "surprise": ["suprise"],
    "their": ["thier"], "there": ["ther"], "thought": ["thougth"], "through": ["throught"], "tomorrow": ["tommorow"],
    "truly": ["truely"], "until": ["untill"], "which": ["wich"], "would": ["woudl"], "write": ["wirte"],
}

# Standard American English -> African American English (our own small subset of the lexical substitutions of
# the kind in Ziems et al. 2022, VALUE; HELM's full mapping file is downloaded at run time).
SAE_TO_AAE: dict[str, list[str]] = {
    "about": ["bout"], "all right": ["aight"], "alright": ["aight"], "because": ["cuz"], "brother": ["brotha"],
    "going to": ["gonna"], "want to": ["wanna"], "got to": ["gotta"], "them": ["dem"], "they": ["dey"],
    "this": ["dis"], "that": ["dat"], "these": ["dese"], "those": ["dose"], "the": ["da"], "with": ["wit"],
    "nothing": ["nothin"], "something": ["somethin"], "anything": ["anythin"], "everything": ["everythin"],
    "going": ["goin"], "doing": ["doin"], "saying": ["sayin"], "talking": ["talkin"], "thinking": ["thinkin"],
    "your": ["yo"], "you all": ["y'all"], "yourself": ["yoself"], "sister": ["sista"],
    "more": ["mo"], "before": ["befo"], "isn't": ["ain't"], "aren't": ["ain't"],
    "friend": ["homie"], "really": ["hella"], "what's up": ["wassup"], "probably": ["prolly"],
}

# Male -> female pronouns in the order HELM applies them (its GENDER_PRONOUN_MAPPINGS, Lauscher et al. 2022).
MALE_TO_FEMALE_PRONOUNS: list[tuple[str, str]] = [
    ("he", "she"), ("him", "her"), ("his", "her"), ("his", "hers"), ("himself", "herself"),
]

ROBUSTNESS = "robustness"
FAIRNESS = "fairness"


def match_case(source: str, target: str) -> str:
    """`target` in the case of `source`: all lower, ALL UPPER, or Capitalized."""
    if all(c.islower() for c in source):
        return target.lower()
    if all(c.isupper() for c in source):
        return target.upper()
    if source and source[0].isupper():
        return target.capitalize()
    return target


def lowercase(text: str, rng: Random) -> str:
    return text.lower()


def contraction(text: str, rng: Random, mapping: Optional[dict[str, str]] = None) -> str:
    """Contract expanded forms that are followed by a space ("it is raining" -> "it's raining")."""
    mapping = CONTRACTIONS if mapping is None else mapping
    lower = {k.lower(): v for k, v in mapping.items()}
    pattern = re.compile(r"\b({})\b ".format("|".join(mapping)), flags=re.IGNORECASE | re.DOTALL)

    def sub(m: re.Match) -> str:
        word = m.group(1)
        return match_case(word, mapping.get(word, lower.get(word.lower()))) + " "

    return pattern.sub(sub, text)


@lru_cache(maxsize=None)
def _word_pattern(words: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\b({})\b".format("|".join(words)))


def misspelling(text: str, rng: Random, prob: float = 0.1, mapping: Optional[dict[str, list[str]]] = None) -> str:
    """Replace each listed word (case-sensitive keys) with one of its misspellings with probability `prob`."""
    mapping = MISSPELLINGS if mapping is None else mapping

    def sub(m: re.Match) -> str:
        word = m.group(1)
        if rng.random() < prob:
            return match_case(word, str(rng.choice(mapping[word])))
        return word

    return _word_pattern(tuple(mapping)).sub(sub, text)


def space(text: str, rng: Random, max_spaces: int = 3) -> str:
    return re.sub(r" +", lambda m: " " * rng.randint(1, max_spaces), text)


def mild_mix(text: str, rng: Random, contractions: Optional[dict] = None, misspellings: Optional[dict] = None) -> str:
    text = lowercase(text, rng)
    text = contraction(text, rng, contractions)
    text = misspelling(text, rng, 0.1, misspellings)
    return space(text, rng, 3)


def dialect(text: str, rng: Random, prob: float = 1.0, mapping: Optional[dict[str, list[str]]] = None) -> str:
    """SAE -> AAE word substitution; a word counts when surrounded by characters other than letters, digits, '_' and '-'."""
    mapping = SAE_TO_AAE if mapping is None else mapping
    pattern = "[^\\w-]({})[^\\w-]".format("|".join(re.escape(w) for w in mapping))

    def sub(m: re.Match) -> str:
        full, word = m.group(0), m.group(1)
        if rng.uniform(0, 1) < prob:
            synonym = match_case(word, rng.choice(mapping[word.lower()]))
            full = full.replace(word, synonym)
        return full

    return re.sub(pattern, sub, text, flags=re.IGNORECASE)


def gender_pronouns(text: str, rng: Random, prob: float = 1.0, pairs: Optional[list[tuple[str, str]]] = None) -> str:
    for word, synonym in MALE_TO_FEMALE_PRONOUNS if pairs is None else pairs:

        def sub(m: re.Match) -> str:
            full, found = m.group(0), m.group(1)
            if rng.uniform(0, 1) < prob:
                full = full.replace(found, match_case(found, synonym))
            return full

        text = re.sub(f"[^\\w]({word})[^\\w]", sub, text, flags=re.IGNORECASE)
    return text


def _load_json(path: Optional[Path]) -> Optional[dict]:
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def canonical(
    misspellings_file: Optional[Path] = None, dialect_file: Optional[Path] = None
) -> dict[str, tuple[str, bool, Callable[[str, Random], str]]]:
    """name -> (kind, perturbs references, text function): HELM's canonical augmentation."""
    misspellings, dialect_map = _load_json(misspellings_file), _load_json(dialect_file)
    return {
        "mild_mix": (ROBUSTNESS, False, lambda t, r: mild_mix(t, r, None, misspellings)),
        "dialect": (FAIRNESS, True, lambda t, r: dialect(t, r, 1.0, dialect_map)),
        "gender": (FAIRNESS, True, lambda t, r: gender_pronouns(t, r, 1.0)),
    }


def augment(instances: list[Instance], perturbations: dict) -> list[Instance]:
    """Each eval instance followed by its changed perturbed copies; train instances untouched."""
    out = []
    for inst in instances:
        out.append(inst)
        if inst.split == "train":
            continue
        for name, (_, perturb_refs, fn) in perturbations.items():
            rng = Random(inst.id)
            refs = tuple(fn(r, rng) for r in inst.references) if perturb_refs else inst.references
            text = fn(inst.input, rng)
            if text == inst.input:
                continue
            out.append(replace(inst, input=text, references=refs, perturbation=name))
    return out
