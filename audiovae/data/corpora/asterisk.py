"""Debian's asterisk-core-sounds-*-g722 prompts: one voice per language; split by prompt, the same in every
language. Nothing to download: ``apt-get install asterisk-core-sounds-es-g722`` (and -en, -fr, -it...)."""

from __future__ import annotations

import re
from pathlib import Path

from audiovae.data.corpora.manifest import Utterance
from audiovae.data.corpora.registry import Corpus, register
from audiovae.data.corpora.split import hash_split
from audiovae.errors import DataError


ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
_ASTERISK_VOICE = re.compile(r"^([a-z]{2}_[A-Z]{2})_[fm]_\w+$")


def read_asterisk(root: Path) -> list[Utterance]:
    """The Debian asterisk-core-sounds-*-g722 prompts: ``LANG_REGION_SEX_NAME/**.g722``, one speaker per language.

    ``root``: the sounds folder (default /usr/share/asterisk/sounds) or one voice folder.
    Speaker = the voice folder (e.g. es_MX_f_Allison), label = the language (es_MX),
    id = ``voice__relative_path``; ``silence/`` (recorded silence) is left out.
    """
    voices = [d for d in sorted(root.iterdir()) if d.is_dir() and _ASTERISK_VOICE.match(d.name)] if root.is_dir() else []
    if not voices and _ASTERISK_VOICE.match(root.name):
        voices = [root]
    if not voices:
        raise DataError("no asterisk voice folders (like es_MX_f_Allison/) here; install asterisk-core-sounds-es-g722 "
                        f"and use {ASTERISK_ROOT}", root)
    utts = []
    for v in voices:
        for f in sorted(v.rglob("*.g722")):
            rel = f.relative_to(v)
            if rel.parts[0] == "silence":
                continue
            utts.append(Utterance(f"{v.name}__{'__'.join(rel.with_suffix('').parts)}", f, speaker=v.name,
                                  label=_ASTERISK_VOICE.match(v.name).group(1)))
    return utts


def asterisk_prompt(u: Utterance) -> str:
    """The prompt's name without the voice (``digits/1``): the same in every language."""
    return u.id.split("__", 1)[1].replace("__", "/")


def split_asterisk(utts: list[Utterance], val_fraction: float, test_fraction: float) -> str:
    # by prompt name: the same prompts are held out in every language, so a test prompt is unheard in training
    for u in utts:
        u.split = hash_split("asterisk:" + asterisk_prompt(u), val_fraction, test_fraction)
    return (f"by file, fixed (sha1 of the prompt name without the voice, so each prompt is in the same split in "
            f"every language; val {val_fraction:g}, test {test_fraction:g})")


ASTERISK = register(Corpus("asterisk", "Debian asterisk-core-sounds-*-g722 (4 speakers = languages)", read_asterisk,
                           split=split_asterisk))
