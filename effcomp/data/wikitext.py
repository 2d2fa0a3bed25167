"""WikiText-2 and -103, raw (Merity et al., 2016), from files you place in `manual_dir`.

Put ONE of these in `manual_dir` (WikiText-2 names; for WikiText-103 read 103 for 2):
  * the folder `wikitext-2-raw/` that the zip below extracts to, holding
    `wiki.train.raw`, `wiki.valid.raw` and `wiki.test.raw`,
  * `wikitext-2-raw-v1.zip` (4.7 MB; `wikitext-103-raw-v1.zip` is 192 MB) from
    https://wikitext.smerity.com/wikitext-2-raw-v1.zip (the author's mirror of the
    original s3.amazonaws.com/research.metamind.io/wikitext/ release), or
  * the three `wiki.*.raw` files themselves.
The first found, in this order, is used. Loose `wiki.*.raw` files do not say which
WikiText they are, so give them a `manual_dir` of their own. (The Hugging Face parquet
copy is not read: it stores whitespace-only lines as '', so the file cannot be rebuilt.)

File format: UTF-8 text, one paragraph or heading per line, tokens separated by spaces,
numbers split as `1 @,@ 000` / `3 @.@ 5` and hyphens as `@-@`. Top-level headings
are lines ` = Title = ` (one `=` each side), section headings ` = = Section = = `,
` = = = Subsection = = = `.

Examples are articles: the file is cut before every top-level heading line, so an
article is its heading line and everything up to the next one, unchanged (section
headings and blank lines included). Text before the first heading (the official files
begin with one blank line) belongs to the first article. The articles of a split, in
order, concatenate to the file's text exactly.

Examples: `text` (UTF-8 text), `doc_id` (`<split>/<index:06d>`, e.g. `test/000000`),
in file order (`disable_shuffling`).
Splits: `train`, `validation`, `test` = `wiki.train.raw`, `wiki.valid.raw`,
`wiki.test.raw`. The paper counts 600 / 60 / 60 articles (WikiText-2) and
28,475 / 60 / 60 (WikiText-103), which share the validation and test articles; the
counts that the heading rule above gives on the real files have not been checked here.

GPTQ-style WikiText-2 perplexities are measured on `"\\n\\n".join(rows)` of the Hugging
Face copy (rows = the file's lines, whitespace-only ones as ''), not on this text.
"""

import os
import re
import zipfile
from typing import Iterable, Iterator

import tensorflow_datasets as tfds

URL = "https://wikitext.smerity.com"
HOMEPAGE = ("https://blog.salesforceairesearch.com/"
            "the-wikitext-long-term-dependency-language-modeling-dataset/")
SPLIT_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw",
               "test": "wiki.test.raw"}
# ` = Title = ` and its line end; ` = = Section = = ` is not one (no '=' after ' = ').
HEADING = re.compile(r" = (?!=)(.+?) =\s*")


def archive_name(variant: str) -> str:
  """The official zip of WikiText-`variant` ('2' or '103'), raw version."""
  return f"wikitext-{variant}-raw-v1.zip"


def folder_name(variant: str) -> str:
  """The folder the zip extracts to (also the files' folder inside the zip)."""
  return f"wikitext-{variant}-raw"


def missing_files_error(manual_dir: str, variant: str) -> FileNotFoundError:
  archive, folder = archive_name(variant), folder_name(variant)
  return FileNotFoundError(
      f"WikiText-{variant}: found neither {os.path.join(manual_dir, archive)} nor "
      f"{', '.join(SPLIT_FILES.values())} in {os.path.join(manual_dir, folder)}/ or "
      f"{manual_dir}/. Download {archive} from {URL}/{archive} and put it in "
      f"manual_dir={manual_dir} (or extract it there to get {folder}/).")


def _has_raw_files(folder: str) -> bool:
  return all(os.path.isfile(os.path.join(folder, f)) for f in SPLIT_FILES.values())


def find_files(manual_dir: str, variant: str) -> str:
  """Where the raw files are: `folder_name/`, else the zip, else `manual_dir` itself.

  Returns:
    The path of a folder holding the three `wiki.*.raw` files, or of the zip.

  Raises:
    FileNotFoundError: none of the three is there (`missing_files_error`).
  """
  folder = os.path.join(manual_dir, folder_name(variant))
  archive = os.path.join(manual_dir, archive_name(variant))
  if _has_raw_files(folder):
    return folder
  if os.path.isfile(archive):
    return archive
  if _has_raw_files(manual_dir):
    return manual_dir
  raise missing_files_error(manual_dir, variant)


def read_lines(path: str, variant: str, split: str) -> Iterator[str]:
  """Lines of the split's file in `path` (a folder or the zip), each with its '\\n'.

  Lines end at '\\n' only (not at '\\r' or other Unicode line breaks), so that
  `''.join(lines)` is the file's text.
  """
  name = SPLIT_FILES[split]
  if os.path.isdir(path):
    with open(os.path.join(path, name), "rb") as f:
      for line in f:
        yield line.decode("utf-8")
    return
  member = f"{folder_name(variant)}/{name}"
  with zipfile.ZipFile(path) as archive:
    if member not in archive.namelist():
      raise FileNotFoundError(f"WikiText-{variant}: {path} has no {member}; download it "
                              f"again from {URL}/{archive_name(variant)}")
    with archive.open(member) as f:
      for line in f:  # Ends at b'\n', which no multi-byte UTF-8 character contains.
        yield line.decode("utf-8")


def is_heading(line: str) -> bool:
  """Whether `line` is a top-level heading ` = Title = ` (not ` = = Section = = `)."""
  return HEADING.fullmatch(line) is not None


def split_articles(lines: Iterable[str]) -> Iterator[str]:
  """Cuts a WikiText file's lines into articles, before each top-level heading.

  Args:
    lines: the file's lines, each with its line end.

  Yields:
    Each article's text: its heading line and the lines up to the next heading. Lines
    before the first heading join the first article, so `''.join(articles)` equals
    `''.join(lines)`.
  """
  article, has_heading = [], False
  for line in lines:
    if is_heading(line):
      if has_heading:
        yield "".join(article)
        article = []
      has_heading = True
    article.append(line)
  if article:
    yield "".join(article)


class WikitextBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """WikiText-`VARIANT` raw, one example per article; subclasses set `VARIANT`."""

  VARIANT = ""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "doc_id": tfds.features.Text(),
        }),
        homepage=HOMEPAGE,
        citation="Merity, S., Xiong, C., Bradbury, J. and Socher, R. (2016). Pointer "
                 "Sentinel Mixture Models. arXiv:1609.07843.",
        disable_shuffling=True,  # Articles stay in file order.
    )

  def _split_generators(self, dl_manager):
    # `dl_manager.manual_dir` raises AssertionError for a missing or empty folder; read
    # the configured path instead so the error can say what to put there.
    manual_dir = os.fspath(dl_manager._manual_dir)  # pylint: disable=protected-access
    path = find_files(manual_dir, self.VARIANT)
    return {split: self._generate_examples(path, split) for split in SPLIT_FILES}

  def _generate_examples(self, path: str, split: str):
    for i, text in enumerate(split_articles(read_lines(path, self.VARIANT, split))):
      # Integer keys: with shuffling disabled, TFDS writes the examples sorted by key.
      yield i, {"text": text, "doc_id": f"{split}/{i:06d}"}


class Wikitext2(WikitextBuilder):
  """WikiText-2 raw (2.1 M training tokens) read from `manual_dir`."""

  name = "effcomp_wikitext2"
  VARIANT = "2"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {archive_name('2')} (from {URL}/{archive_name('2')}) or its extracted "
      f"{folder_name('2')}/ folder in manual_dir.")


class Wikitext103(WikitextBuilder):
  """WikiText-103 raw (103 M training tokens) read from `manual_dir`."""

  name = "effcomp_wikitext103"
  VARIANT = "103"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {archive_name('103')} (from {URL}/{archive_name('103')}) or its extracted "
      f"{folder_name('103')}/ folder in manual_dir.")
