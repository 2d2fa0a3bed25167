"""English text that every Python installation ships, as a TFDS dataset (no download).

Documents, in two kinds:
  * `topic/<key>` — each entry of `pydoc_data.topics.topics`, the language-reference
    and library-reference sections that `help('if')`, `help('FORMATTING')` … print
    (79 topics, 465k characters on CPython 3.11).
  * `stdlib/<module>` and `stdlib/<module>.<name>` — the docstring of each module in
    `MODULES` (a fixed list of 121 standard-library modules without import side
    effects), and of each public function and class that module defines (public =
    listed in `__all__`, else not starting with `_`; defined = `obj.__module__` is the
    module, one of its submodules, or its C accelerator `_<module>`; an object reachable
    from several modules is documented once, under the first in `MODULES`). A class
    document holds the class docstring and then, under a `Class.method` heading, the
    docstring of each public method or property the class itself defines. Docstrings
    are read from `__doc__` (not inherited), dedented with `inspect.cleandoc`, and
    skipped when shorter than `MIN_WORDS` words. A module that fails to import is
    skipped with a warning.

Each document's first line names it (`json.dumps`, `class json.JSONEncoder`, `Module
json`); the topic texts bring their own titles.

Examples: `text` (UTF-8 text), `doc_id` (as above).

Splits: by a stable hash of the document id, so a document never straddles splits and
the assignment does not depend on `PYTHONHASHSEED` or on which other documents exist:
`int(sha256(doc_id)[:8 bytes]) % 100` → 0..89 `train`, 90..94 `validation`, 95..99
`test`.

Sizes on CPython 3.11.7 (documents / characters; 79 topics with 464,970 characters,
1,490 docstring documents with 868,108):
  train 1,415 / 1,245,546; validation 81 / 43,655; test 73 / 43,877;
  total 1,569 documents, 1,333,078 characters (1.1 MB as ArrayRecord).
The largest documents (topic/specialnames, 62k characters) happen to fall in train, so
validation and test hold 3.3% of the characters each.
The corpus is what the *building* interpreter ships: another Python version gives a
slightly different corpus (rebuild into a fresh `data_dir` to compare).
"""

import hashlib
import importlib
import inspect
import warnings
from pydoc_data.topics import topics

from absl import logging
import tensorflow_datasets as tfds

# Pure-Python (or C-accelerated with docstrings) modules that import without side
# effects on CPython 3.11–3.13. Deliberately absent: antigravity/this (open a browser /
# print), tkinter/turtle/idlelib (need Tk), modules deprecated or removed by 3.13
# (asynchat, cgi, imp, telnetlib, …), and ones whose C part may be missing (sqlite3,
# ssl, curses, readline).
MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bdb", "bisect", "calendar", "cmd",
    "code", "codecs", "collections", "colorsys", "concurrent.futures", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis",
    "doctest", "email.message", "email.parser", "email.utils", "enum", "filecmp",
    "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext",
    "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser",
    "http.client", "http.cookies", "http.server", "imaplib", "importlib",
    "importlib.metadata", "inspect", "ipaddress", "json", "keyword", "linecache",
    "locale", "logging", "logging.handlers", "lzma", "mailbox", "mimetypes",
    "multiprocessing", "numbers", "operator", "optparse", "os", "pathlib", "pdb",
    "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib", "pprint",
    "profile", "pstats", "pydoc", "queue", "quopri", "random", "re", "reprlib", "sched",
    "secrets", "selectors", "shelve", "shlex", "shutil", "smtplib", "socket",
    "socketserver", "statistics", "string", "stringprep", "struct", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "tomllib",
    "trace", "traceback", "types", "typing", "unittest", "unittest.mock",
    "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipapp", "zipfile", "zoneinfo",
)

# Docstrings of fewer words carry no English (ast.Eq's docstring is "Eq").
MIN_WORDS = 3
SPLIT_PERCENT = {"train": 90, "validation": 5, "test": 5}


def split_of(doc_id: str) -> str:
  """The split of a document: sha256 of its id, first 8 bytes, mod 100 → 90/5/5."""
  bucket = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") % 100
  bound = 0
  for split, percent in SPLIT_PERCENT.items():
    bound += percent
    if bucket < bound:
      return split
  raise AssertionError(f"SPLIT_PERCENT sums to {bound}, expected 100")


def _doc(obj) -> str:
  """`obj.__doc__` dedented, or '' when absent or shorter than `MIN_WORDS` words."""
  doc = getattr(obj, "__doc__", None)
  if not isinstance(doc, str) or len(doc.split()) < MIN_WORDS:
    return ""
  return inspect.cleandoc(doc)


def _public_names(module) -> list[str]:
  names = getattr(module, "__all__", None)
  if names is None:
    names = [n for n in vars(module) if not n.startswith("_")]
  return sorted(set(names))


def _class_text(qualname: str, cls) -> str:
  """The class docstring, then each public method's / property's under a heading."""
  sections = [f"class {qualname}\n\n{_doc(cls)}".rstrip()]
  for name, member in sorted(vars(cls).items()):
    if name.startswith("_"):
      continue
    if isinstance(member, (classmethod, staticmethod)):
      member = member.__func__
    if not (callable(member) or isinstance(member, property)):
      continue
    doc = _doc(member)
    if doc:
      sections.append(f"{cls.__name__}.{name}\n\n{doc}")
  return "\n\n".join(sections)


def _defined_in(obj, module_name: str) -> bool:
  """Whether `obj` is a function/class of `module_name`, its submodules or its C twin.

  The C twin is the accelerator module `_<name>` (`_pickle.Pickler`, `_heapq.heappush`),
  whose objects `module_name` re-exports as its own.
  """
  owner = getattr(obj, "__module__", None)
  return callable(obj) and isinstance(owner, str) and (
      owner in (module_name, "_" + module_name) or owner.startswith(module_name + "."))


def module_documents(module_name: str, seen: set[str] | None = None) -> dict[str, str]:
  """{doc_id: text} for one module: its docstring and its public functions/classes.

  Args:
    module_name: importable standard-library module, e.g. 'json'.
    seen: `'{obj.__module__}.{obj.__qualname__}'` of objects already documented under
      another module (e.g. `json.encoder.JSONEncoder` seen as `json.JSONEncoder`);
      they are skipped and new ones are added to it.
  """
  seen = set() if seen is None else seen
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # e.g. DeprecationWarnings raised on import.
    module = importlib.import_module(module_name)
  docs = {}
  if _doc(module):
    docs[f"stdlib/{module_name}"] = f"Module {module_name}\n\n{_doc(module)}"
  for name in _public_names(module):
    obj = getattr(module, name, None)
    if not _defined_in(obj, module_name):
      continue  # Re-exported from elsewhere, or not a function/class.
    origin = f"{obj.__module__}.{getattr(obj, '__qualname__', name)}"
    if origin in seen:
      continue
    qualname = f"{module_name}.{name}"
    if inspect.isclass(obj):
      text = _class_text(qualname, obj)
      if text == f"class {qualname}":
        continue  # No docstring anywhere in the class.
    elif _doc(obj):
      text = f"{qualname}\n\n{_doc(obj)}"
    else:
      continue
    seen.add(origin)
    docs[f"stdlib/{qualname}"] = text
  return docs


def all_documents() -> dict[str, str]:
  """{doc_id: text} for the whole corpus (pydoc topics, then `MODULES` docstrings)."""
  docs = {f"topic/{key}": text for key, text in topics.items() if text.strip()}
  seen = set()
  for module_name in MODULES:
    try:
      docs.update(module_documents(module_name, seen))
    except ImportError as e:
      logging.warning("python_docs: skipping module %s: %s", module_name, e)
  return docs


class PythonDocs(tfds.core.GeneratorBasedBuilder):
  """Python's bundled documentation and standard-library docstrings."""

  name = "effcomp_python_docs"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "doc_id": tfds.features.Text(),
        }),
        homepage="https://docs.python.org/3/library/pydoc.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything ships with Python.
    docs = all_documents()
    by_split = {split: {} for split in SPLIT_PERCENT}
    for doc_id, text in docs.items():
      by_split[split_of(doc_id)][doc_id] = text
    return {split: self._generate_examples(d) for split, d in by_split.items()}

  def _generate_examples(self, docs: dict[str, str]):
    for doc_id, text in docs.items():
      yield doc_id, {"text": text, "doc_id": doc_id}
