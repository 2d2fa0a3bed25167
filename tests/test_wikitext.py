"""WikiText-2/-103 builders: a fake raw corpus, placed in `manual_dir` as the official
zip, as its extracted folder or as loose files, reads back article by article and
concatenates to the files' text exactly; errors name the files and the folder."""

import zipfile

import pytest

from effcomp.data import sources
from effcomp.data import wikitext

# Wikitext-style articles per split: a top-level ` = Title = ` heading, ` = = Sub = = `
# headings, ' \n' blank lines, `@-@` / `@,@` / `@.@` tokens, non-ASCII text, a U+2028
# line separator (not a line end for WikiText) and, in test, no final '\n'.
ARTICLES = {
    "train": [
        " \n = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : Unrecorded Chronicles "
        "( Japanese : 戦場のヴァルキュリア3 ) is a tactical role @-@ playing video game . \n"
        " \n = = Gameplay = = \n \n It sold 1 @,@ 000 copies at 3 @.@ 5 yen each . \n \n",
        " = Tower Building of the Little Rock Arsenal = \n \n The building is a two @-@ "
        "story structure . \n \n = = Construction = = \n \n = = = 1840 – 1841 = = = \n \n"
        " The formula a = b = c holds ; a line separator \u2028 is not a line end . \n \n \n",
        " = Ωmega ( band ) = \n \n Naïve café music ; the = sign . \n",
    ],
    "validation": [
        " \n = Homarus gammarus = \n \n Homarus gammarus is a species of clawed lobster "
        ". \n \n",
        " = Du Fu = \n \n Du Fu ( 杜甫 ; 712 – 770 ) was a Chinese poet . \n \n = = Life = = "
        "\n \n",
    ],
    "test": [
        " \n = Robert Boulter = \n \n Robert Boulter is an English film , television and "
        "theatre actor . \n \n = = Career = = \n \n",
        " = Kiss You ( One Direction song ) = \n \n The file ends without a newline .",
    ],
}


def _file_text(split: str) -> str:
  return "".join(ARTICLES[split])


def _write_raw_files(folder) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for split, name in wikitext.SPLIT_FILES.items():
    (folder / name).write_bytes(_file_text(split).encode("utf-8"))


def _write_zip(manual_dir, variant: str) -> None:
  manual_dir.mkdir(parents=True, exist_ok=True)
  with zipfile.ZipFile(manual_dir / wikitext.archive_name(variant), "w",
                       zipfile.ZIP_DEFLATED) as archive:
    for split, name in wikitext.SPLIT_FILES.items():
      archive.writestr(f"{wikitext.folder_name(variant)}/{name}",
                       _file_text(split).encode("utf-8"))


def _read_split(name: str, split: str, **kwargs) -> tuple[list[str], list[str]]:
  """(texts, doc_ids) of a prepared split, in source order."""
  source = sources.get_source(name, split, **kwargs)
  examples = [source[i] for i in range(len(source))]
  return ([e["text"].decode("utf-8") for e in examples],
          [e["doc_id"].decode("utf-8") for e in examples])


# --- splitting into articles -----------------------------------------------------------

def test_only_single_equals_lines_are_top_level_headings():
  assert wikitext.is_heading(" = Valkyria Chronicles III = \n")
  assert wikitext.is_heading(" = Ωmega ( band ) = ")  # Last line, no line end.
  assert not wikitext.is_heading(" = = Gameplay = = \n")
  assert not wikitext.is_heading(" = = = 1840 – 1841 = = = \n")
  assert not wikitext.is_heading(" The formula a = b = c holds . \n")
  assert not wikitext.is_heading(" \n")


def test_split_articles_cuts_before_headings_and_keeps_every_character():
  lines = [" \n", " = A = \n", " \n", " = = A1 = = \n", " a \n", " = B = \n", " b"]
  assert list(wikitext.split_articles(lines)) == [
      " \n = A = \n \n = = A1 = = \n a \n", " = B = \n b"]
  assert list(wikitext.split_articles([" no heading \n", " at all \n"])) == [
      " no heading \n at all \n"]
  assert not list(wikitext.split_articles([]))


# --- builders --------------------------------------------------------------------------

def test_wikitext2_without_files_names_the_zip_and_manual_dir(tmp_path):
  manual_dir = tmp_path / "manual"
  with pytest.raises(FileNotFoundError) as e:
    sources.get_source("wikitext2", "test", data_dir=str(tmp_path / "data"),
                       manual_dir=str(manual_dir))
  message = str(e.value)
  assert str(manual_dir / "wikitext-2-raw-v1.zip") in message
  assert str(manual_dir / "wikitext-2-raw") in message and "wiki.test.raw" in message
  assert "https://wikitext.smerity.com/wikitext-2-raw-v1.zip" in message


@pytest.mark.parametrize("layout", ["zip", "folder", "loose"])
def test_wikitext2_reads_back_the_articles_of_each_split_in_file_order(tmp_path, layout):
  manual_dir = tmp_path / "manual"
  if layout == "zip":
    _write_zip(manual_dir, "2")
  else:
    _write_raw_files(manual_dir / "wikitext-2-raw" if layout == "folder" else manual_dir)
  kwargs = dict(data_dir=str(tmp_path / "data"), manual_dir=str(manual_dir))
  for split, articles in ARTICLES.items():
    texts, doc_ids = _read_split("wikitext2", split, **kwargs)
    assert texts == articles
    assert "".join(texts) == _file_text(split)
    assert doc_ids == [f"{split}/{i:06d}" for i in range(len(articles))]
  splits = sources.info("wikitext2", **kwargs).splits
  assert {s: splits[s].num_examples for s in ARTICLES} == {
      "train": 3, "validation": 2, "test": 2}


def test_wikitext103_reads_its_own_zip_not_loose_wikitext2_files(tmp_path):
  manual_dir = tmp_path / "manual"
  _write_zip(manual_dir, "103")
  # Loose files in the same manual_dir (say, WikiText-2's) come last in the search.
  (manual_dir / "wiki.train.raw").write_text(" = Wrong = \n")
  (manual_dir / "wiki.valid.raw").write_text(" = Wrong = \n")
  (manual_dir / "wiki.test.raw").write_text(" = Wrong = \n")
  texts, doc_ids = _read_split("wikitext103", "train", data_dir=str(tmp_path / "data"),
                               manual_dir=str(manual_dir))
  assert texts == ARTICLES["train"] and doc_ids[-1] == "train/000002"


def test_zip_without_the_official_inner_folder_is_an_error(tmp_path):
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  with zipfile.ZipFile(manual_dir / "wikitext-2-raw-v1.zip", "w") as archive:
    for name in wikitext.SPLIT_FILES.values():
      archive.writestr(name, " = A = \n")  # At the top, not under wikitext-2-raw/.
  with pytest.raises(FileNotFoundError, match=r"has no wikitext-2-raw/wiki\.\w+\.raw"):
    sources.get_source("wikitext2", "train", data_dir=str(tmp_path / "data"),
                       manual_dir=str(manual_dir))
