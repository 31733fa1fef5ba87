"""The character inventory's raw material: Unicode blocks grouped into scripts ("alphabets").

Each glyph class belongs to one script, the analogue of an Omniglot alphabet. A script is
a Unicode block, or several blocks of one writing system merged (Latin-1 Supplement,
Latin Extended-A/B/Additional -> "Latin"). The block ranges are those of the Unicode
Character Database (Blocks.txt); only blocks that matplotlib's bundled fonts cover are
listed, anything else is never a candidate. Pictures that are not characters (emoji, playing
cards, domino and mahjong tiles, control pictures) are left out on purpose.

Which characters may become a class at all (:func:`is_candidate`): letters, numbers and
symbols that stand alone as a picture. Excluded are combining marks, spacing modifiers and
modifier symbols (diacritics drawn alone), punctuation (dots and strokes that only differ
in position on the line), separators and controls, characters with a canonical
decomposition (precomposed letter + diacritic: the class would hinge on a few pixels of
accent) and characters whose NFKC form differs (compatibility variants of another
character: math alphanumerics, presentation forms, ligatures, circled / full-width forms).
"""

from __future__ import annotations

import unicodedata

# (first, last, script) in code point order; script = the group a class is reported under.
BLOCKS: tuple[tuple[int, int, str], ...] = (
    (0x0000, 0x007F, "Latin"),                      # Basic Latin
    (0x0080, 0x00FF, "Latin"),                      # Latin-1 Supplement
    (0x0100, 0x017F, "Latin"),                      # Latin Extended-A
    (0x0180, 0x024F, "Latin"),                      # Latin Extended-B
    (0x0250, 0x02AF, "IPA"),                        # IPA Extensions
    (0x0370, 0x03FF, "Greek"),                      # Greek and Coptic
    (0x0400, 0x04FF, "Cyrillic"),                   # Cyrillic
    (0x0500, 0x052F, "Cyrillic"),                   # Cyrillic Supplement
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x07C0, 0x07FF, "NKo"),
    (0x0E80, 0x0EFF, "Lao"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x13A0, 0x13FF, "Cherokee"),
    (0x1400, 0x167F, "Canadian Syllabics"),         # Unified Canadian Aboriginal Syllabics
    (0x1680, 0x169F, "Ogham"),
    (0x16A0, 0x16FF, "Runic"),
    (0x1D00, 0x1D7F, "Phonetic Extensions"),
    (0x1D80, 0x1DBF, "Phonetic Extensions"),        # Phonetic Extensions Supplement
    (0x1E00, 0x1EFF, "Latin"),                      # Latin Extended Additional
    (0x1F00, 0x1FFF, "Greek"),                      # Greek Extended
    (0x20A0, 0x20CF, "Currency Symbols"),
    (0x2100, 0x214F, "Letterlike Symbols"),
    (0x2150, 0x218F, "Number Forms"),
    (0x2190, 0x21FF, "Arrows"),
    (0x2200, 0x22FF, "Mathematical Operators"),
    (0x2300, 0x23FF, "Miscellaneous Technical"),
    (0x2440, 0x245F, "Optical Character Recognition"),
    (0x2500, 0x257F, "Box Drawing"),
    (0x2580, 0x259F, "Block Elements"),
    (0x25A0, 0x25FF, "Geometric Shapes"),
    (0x2600, 0x26FF, "Miscellaneous Symbols"),
    (0x2700, 0x27BF, "Dingbats"),
    (0x27C0, 0x27EF, "Miscellaneous Mathematical Symbols-A"),
    (0x27F0, 0x27FF, "Arrows"),                     # Supplemental Arrows-A
    (0x2800, 0x28FF, "Braille"),
    (0x2900, 0x297F, "Arrows"),                     # Supplemental Arrows-B
    (0x2980, 0x29FF, "Miscellaneous Mathematical Symbols-B"),
    (0x2A00, 0x2AFF, "Supplemental Mathematical Operators"),
    (0x2B00, 0x2BFF, "Miscellaneous Symbols and Arrows"),
    (0x2C00, 0x2C5F, "Glagolitic"),
    (0x2C60, 0x2C7F, "Latin"),                      # Latin Extended-C
    (0x2C80, 0x2CFF, "Coptic"),
    (0x2D00, 0x2D2F, "Georgian"),                   # Georgian Supplement
    (0x2D30, 0x2D7F, "Tifinagh"),
    (0x4DC0, 0x4DFF, "Yijing Hexagrams"),
    (0xA4D0, 0xA4FF, "Lisu"),
    (0xA640, 0xA69F, "Cyrillic"),                   # Cyrillic Extended-B
    (0xA720, 0xA7FF, "Latin"),                      # Latin Extended-D
    (0x10300, 0x1032F, "Old Italic"),
    (0x1D300, 0x1D35F, "Tai Xuan Jing"),
)

_KEEP_CATEGORIES = {"Lu", "Ll", "Lt", "Lo", "Nd", "Nl", "No", "Sm", "Sc", "So"}


def script_of(cp: int) -> str | None:
    """The script (alphabet) of code point ``cp``, or None outside the listed blocks."""
    for first, last, script in BLOCKS:
        if first <= cp <= last:
            return script
    return None


def is_candidate(cp: int) -> bool:
    """Whether ``cp`` may become a glyph class (see the module docstring for the rule)."""
    ch = chr(cp)
    if script_of(cp) is None or unicodedata.category(ch) not in _KEEP_CATEGORIES:
        return False
    if not unicodedata.name(ch, ""):
        return False
    return unicodedata.normalize("NFD", ch) == ch and unicodedata.normalize("NFKC", ch) == ch


def class_name(cp: int) -> str:
    """Readable class name, e.g. ``"Greek/GREEK SMALL LETTER PSI (U+03C8)"``."""
    return f"{script_of(cp)}/{unicodedata.name(chr(cp))} (U+{cp:04X})"


# The standard class split, by whole scripts (like Omniglot's background / evaluation
# alphabets): novel = writing systems never seen in pre-training (about 30 % of the
# classes), val = a few scripts for model selection (about 10 %), source = the rest.
NOVEL_SCRIPTS = frozenset({
    "Canadian Syllabics", "Georgian", "Braille", "Armenian", "Lao", "NKo", "Tifinagh",
    "Hebrew", "Ogham", "Old Italic", "Runic", "Cherokee", "Coptic", "Glagolitic",
})
VAL_SCRIPTS = frozenset({"Arabic", "Greek", "Box Drawing", "Miscellaneous Symbols and Arrows"})


def split_of(script: str) -> str:
    """The class split ("source", "val" or "novel") of every class of ``script``."""
    if script in NOVEL_SCRIPTS:
        return "novel"
    if script in VAL_SCRIPTS:
        return "val"
    return "source"
