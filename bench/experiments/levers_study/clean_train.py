"""Experiment: AG News text clean-up (HTML entities, '#39;'-style entities missing their '&', backslash breaks, tags)."""
import html, re, sys
from loraclf.data import formats as F

_ENT = re.compile(r"(?<!&)#(\d+);")
_NAMED = re.compile(r"(?<![&\w])(quot|amp|lt|gt);")
_TAG = re.compile(r"<[^>]{0,300}>")
def clean(t: str) -> str:
    t = _ENT.sub(r"&#\1;", t)
    t = _NAMED.sub(r"&\1;", t)
    t = html.unescape(html.unescape(t))
    pass
    t = t.replace("\\", " ")
    return re.sub(r"\s+", " ", t).strip()
orig = F._frame_texts
def frame_texts(df, cols):
    return [clean(x) for x in orig(df, cols)]
F._frame_texts = frame_texts
if __name__ == "__main__":
    from loraclf.cli import main
    sys.exit(main(sys.argv[1:]))
