"""Which cases belong to one subject (patient): repeat scans, mirrors and crops of one subject are not
independent, so every split we write keeps them on one side and tau is fitted leaving a subject out.

``nnunet_mt merge`` records a subject per case in the merged dataset.json (``nnunet_mt.cases.<id>.subject``):
- default: every case is its own subject (the merged case id);
- ``--subject_pattern REGEX``: the first group (or the whole match) of the regex searched in the source's
  case id, prefixed with the source dataset's name (``Dataset011_Liver/pat0004``); a case it does not match
  is its own subject;
- ``--subject_map FILE``: a JSON object or a two-column CSV/TSV (case id, subject); keys are the source's
  case ids or the merged ones (``D011_case``); the subject is taken as written, so one subject can span
  sources. Cases not listed are their own subject.
"""
import csv
import json
import os
import re
from typing import Dict, List, Optional, Sequence

from nnunet_mt.errors import InputError
from nnunet_mt.merge import PROVENANCE_KEY


class SubjectRule:
    """subject(source name, merged case id, source case id) -> subject id, from a pattern, a map or neither."""

    def __init__(self, pattern: Optional[str] = None, mapping_file: Optional[str] = None):
        if pattern and mapping_file:
            raise InputError("give --subject_pattern or --subject_map, not both")
        self.pattern, self.mapping_file = pattern, mapping_file
        self.regex = None
        if pattern is not None:
            try:
                self.regex = re.compile(pattern)
            except re.error as e:
                raise InputError(f"--subject_pattern {pattern!r}: not a regular expression ({e})")
        self.mapping = read_subject_map(mapping_file) if mapping_file else {}

    def subject(self, source: str, case_id: str, original_id: str) -> str:
        matched = pattern_subject(self.regex, original_id) if self.regex is not None else None
        if matched is not None:
            return f"{source}/{matched}"
        for key in (case_id, original_id):
            if key in self.mapping:
                return self.mapping[key]
        return case_id

    def describe(self) -> str:
        if self.regex is not None:
            return f"pattern {self.pattern!r}"
        return f"map {self.mapping_file}" if self.mapping_file else "one subject per case"


def read_subject_map(path: str) -> Dict[str, str]:
    """{case id: subject} from a JSON object or a two-column CSV/TSV (a header row 'case,subject' is skipped)."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: subject map not found")
    try:
        with open(path, newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise InputError(f"{path}: subject map is not a text file")
    if path.endswith(".json"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: invalid JSON ({e})")
        if not isinstance(mapping, dict) or not all(isinstance(v, (str, int)) for v in mapping.values()):
            raise InputError(f"{path}: expected a JSON object {{case id: subject}}")
        return {str(k): str(v) for k, v in mapping.items()}
    delimiter = "\t" if path.endswith(".tsv") else ","
    mapping = {}
    for i, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter)):
        if not row or (i == 0 and [c.strip().lower() for c in row[:2]] == ["case", "subject"]):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise InputError(f"{path}: line {i + 1}: expected two columns 'case{delimiter}subject'")
        mapping[row[0].strip()] = row[1].strip()
    if not mapping:
        raise InputError(f"{path}: subject map lists no case")
    return mapping


def case_subjects(dataset_json: dict, case_ids: Sequence[str]) -> List[str]:
    """The subject of each case id (as merge recorded it); a case without one is its own subject."""
    recorded = dataset_json.get(PROVENANCE_KEY, {}).get("cases", {})
    return [str(recorded.get(c, {}).get("subject", c)) for c in case_ids]


def subject_of(dataset_json: dict) -> Dict[str, str]:
    """{case: subject} of every case merge recorded."""
    cases = list(dataset_json.get(PROVENANCE_KEY, {}).get("cases", {}))
    return dict(zip(cases, case_subjects(dataset_json, cases)))


def shares_subjects(dataset_json: dict) -> bool:
    """True when some subject of the dataset holds more than one case."""
    subjects = subject_of(dataset_json)
    return len(set(subjects.values())) < len(subjects)


def pattern_subject(regex, case_id: str) -> Optional[str]:
    """The first group (or the whole match) of a compiled regex searched in case_id; None when it does not match."""
    match = regex.search(case_id)
    if not match:
        return None
    return match.group(1) if regex.groups else match.group(0)
