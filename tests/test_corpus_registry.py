"""The corpus registry: one table of corpora (readers, split policies, archives) that prepare, download, the
command line and the recipes all read; and `audiovae manifest`, through which the recipes read a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audiovae.cli import cli
from audiovae.data import download
from audiovae.data.corpora import (CORPORA, Archive, Corpus, Manifest, Utterance, corpus_names, get_corpus, prepare,
                                   register, write_manifest)
from audiovae.errors import DataError, DownloadError


def test_cli_choices_and_download_table_come_from_the_registry():
    prepare_cmd = cli.commands["prepare"]
    choices = next(p for p in prepare_cmd.params if p.name == "corpus").type.choices
    assert list(choices) == list(corpus_names("prepare")) == [n for n, c in CORPORA.items() if c.reader]
    assert list(download.CORPORA) == [n for n, c in CORPORA.items() if c.subsets]
    assert {"ljspeech", "librispeech", "mnist"} <= set(download.CORPORA) and "folder" not in download.CORPORA
    for name, c in CORPORA.items():  # every corpus can be prepared or downloaded, and is what get_corpus gives
        assert c.reader or c.subsets, name
        assert get_corpus(name) is c
        if c.subsets:
            assert download.get_corpus(name) is c
    with pytest.raises(DataError, match="unknown corpus 'nope'"):
        get_corpus("nope")


@pytest.fixture
def toy_corpus(tmp_path):
    """A corpus registered by a test (as a new corpus module would), removed again afterwards."""
    root = tmp_path / "toy"
    (root / "clips").mkdir(parents=True)
    for i in range(4):
        sf.write(root / "clips" / f"c{i}.wav", np.zeros(1600, "float32"), 16000)

    def read_toy(r: Path, subdirs: str = "none") -> list[Utterance]:
        assert subdirs == "label"  # reader_options pass prepare's keyword through
        return [Utterance(f.stem, f, label="toy", split="test" if f.stem == "c0" else "train")
                for f in sorted((r / "clips").glob("*.wav"))]

    toy = Corpus("toy", "a test corpus", read_toy, reader_options=("subdirs",), official="official (c0 -> test)",
                 root="toy", subsets={"all": (Archive("http://127.0.0.1/toy.tar.gz", 1234, "0" * 64, dest="toy"),)},
                 default_subsets=("all",), note="toy")
    register(toy)
    try:
        yield toy, root
    finally:
        del CORPORA["toy"]


def test_a_registered_corpus_is_prepared_and_downloadable(toy_corpus, tmp_path):
    toy, root = toy_corpus
    with pytest.raises(ValueError, match="registered already"):
        register(Corpus("toy", "another", None))
    man = prepare("toy", root, tmp_path / "m", subdirs="label", val_fraction=0.3, progress=False)
    assert [(u.id, u.split) for u in man.utterances if u.split == "test"] == [("c0", "test")]
    assert "val" in {u.split for u in man.utterances}  # no official val: carved from train
    assert download.get_corpus("toy") is toy and "toy" in download.CORPORA
    assert download.locate("toy", tmp_path) == tmp_path / "toy"  # already there: its archive's folder exists


def test_image_and_folder_corpora_are_refused_where_they_do_not_belong(tmp_path):
    with pytest.raises(DataError, match="mnist is read as it is"):
        prepare("mnist", tmp_path)
    with pytest.raises(DownloadError, match="no download for corpus 'asterisk'"):
        download.get_corpus("asterisk")


def test_manifest_command_prints_splits_and_utterances(tmp_path, monkeypatch):
    utts = [Utterance(f"u{i}", Path(f"a/u{i}.wav"), split=s) for i, s in enumerate(["train", "test", "test", "val"])]
    monkeypatch.chdir(tmp_path)
    m = write_manifest(Manifest(utts, "folder", str(tmp_path), "by hand"), tmp_path / "data")
    monkeypatch.chdir("/")
    runner = CliRunner()
    res = runner.invoke(cli, ["manifest", str(m.parent), "--splits"])
    assert res.exit_code == 0 and res.output.split() == ["train", "val", "test"]
    res = runner.invoke(cli, ["manifest", str(m), "--split", "test", "--limit", "1"])
    assert res.exit_code == 0 and res.output == f"u1\t{tmp_path / 'a' / 'u1.wav'}\n"
    res = runner.invoke(cli, ["manifest", str(m), "--split", "test"])
    assert [ln.split("\t")[0] for ln in res.output.splitlines()] == ["u1", "u2"]
    res = runner.invoke(cli, ["manifest", str(m)])
    assert res.exit_code == 0 and "4 utterances" in res.output
    res = runner.invoke(cli, ["manifest", str(tmp_path / "none"), "--splits"])
    assert res.exit_code == 1 and "no manifest.tsv here" in res.output
