"""`data.t2s` converters: OpenCC's C++ library (PyPI `opencc`) vs opencc-python-reimplemented.

    pip install --target /tmp/opencc-py opencc-python-reimplemented==0.1.7   # once, beside `opencc`
    python benchmarks/t2s_speed.py --python-impl /tmp/opencc-py
    python benchmarks/t2s_speed.py --python-impl /tmp/opencc-py --max-chars 200000   # quicker

Both distributions install the same import name, `opencc`, so they cannot live in one
environment: the pure-Python one is put first on `sys.path` of its own process from a
`pip install --target` directory. The test text is traditional Chinese made from the shared
pretrain corpus with OpenCC's `s2t` (plus a few fixed sentences). Each converter runs
`OpenCC("t2s").convert` line by line (as `zhbert.prep.corpus.normalize_text` does) in a
fresh process; the script prints whether the outputs are identical (and the first differing
lines), each side's CPU time (construction and conversion) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FIXED = ["漢語是世界上使用人數最多的語言。", "這個軟體的記憶體不夠用了，請重新開機。", "臺灣的計程車和香港的的士。",
         "我們明天一起去圖書館閱讀《紅樓夢》吧！", "乾隆皇帝下江南，發現了一個乾淨的地方。"]


def _child(impl_path: str, src: str, dst: str) -> None:
    if impl_path:
        sys.path.insert(0, impl_path)
    t0 = time.process_time()
    from opencc import OpenCC

    convert = OpenCC("t2s").convert
    t1 = time.process_time()
    lines = Path(src).read_text(encoding="utf-8").split("\n")
    out = [convert(x) for x in lines]
    t2 = time.process_time()
    Path(dst).write_text("\n".join(out), encoding="utf-8")
    import opencc

    print(json.dumps({"module": opencc.__file__, "init_s": t1 - t0, "convert_s": t2 - t1}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", default=[str(SHARED / "pretrain_corpus")])
    ap.add_argument("--python-impl", required=False, default="",
                    help="a `pip install --target` directory holding opencc-python-reimplemented")
    ap.add_argument("--max-chars", type=int, default=1_000_000, help="characters of test text")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0

    import opencc

    if not hasattr(opencc, "clib"):
        sys.exit("error: `import opencc` is not OpenCC's C++ binding here (pip install opencc)")
    if not args.python_impl or not (Path(args.python_impl) / "opencc" / "opencc.py").is_file():
        sys.exit("error: --python-impl DIR: pip install --target DIR opencc-python-reimplemented==0.1.7")
    from zhbert.prep.corpus import iter_documents

    s2t = opencc.OpenCC("s2t").convert
    lines, n = list(FIXED), sum(map(len, FIXED))
    for d in iter_documents(args.input):
        for s in d.sentences:
            lines.append(s2t(s))
            n += len(s)
        if n >= args.max_chars:
            break
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.txt"
        src.write_text("\n".join(lines), encoding="utf-8")
        res, outs = {}, {}
        for name, path in (("opencc (C++)", ""), ("opencc-python-reimplemented", args.python_impl)):
            dst = Path(tmp) / f"{len(res)}.txt"
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")])))
            r = subprocess.run([sys.executable, __file__, "--child", path, str(src), str(dst)],
                               check=True, capture_output=True, text=True, env=env)
            res[name] = json.loads(r.stdout.strip().splitlines()[-1])
            outs[name] = dst.read_text(encoding="utf-8").split("\n")
    a, b = outs.values()
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    fast, slow = res["opencc (C++)"], res["opencc-python-reimplemented"]
    print(f"test text: {len(lines):,} lines, {n:,} characters (traditional, from the shared corpus by s2t)")
    for name, r in res.items():
        print(f"{name:30} construct {r['init_s']:6.3f} s, convert {r['convert_s']:7.3f} s CPU  ({r['module']})")
    print(f"identical output: {not diff} ({len(diff)} of {len(a):,} lines differ)")
    for x, y in diff[:5]:
        print(f"  C++:    {x}\n  Python: {y}")
    print(f"speed ratio (convert, Python / C++): x{slow['convert_s'] / fast['convert_s']:.1f}; "
          f"with construction x{(slow['convert_s'] + slow['init_s']) / (fast['convert_s'] + fast['init_s']):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
