#!/usr/bin/env python3
"""Every relative link in README.md and docs/*.md must name a file that
exists, and a `#anchor` into a Markdown file must be one of its headings
(GitHub's slugs: lower case, punctuation dropped, spaces as hyphens, a
repeated heading numbered). The README's sections moved to docs/ (issue
#23): a link left pointing at the old place would fail silently on GitHub.
Run from anywhere; exits 1 and names each broken link."""
import glob
import os
import re
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(root)


def slug(heading):
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    found, seen, fence = set(), {}, False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            fence = not fence
        match = None if fence else re.match(r"#{1,6} (.*)", line)
        if match:
            s = slug(match.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            found.add(s if n == 0 else "%s-%d" % (s, n))
    return found


broken = checked = 0
for page in ["README.md"] + sorted(glob.glob("docs/*.md")):
    text = re.sub(r"```.*?```", "", open(page, encoding="utf-8").read(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]*)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        checked += 1
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(full):
            print("%s: link to `%s`: no such file" % (page, target))
            broken += 1
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            print("%s: link to `%s`: no such heading" % (page, target))
            broken += 1
print("docs links: %d relative links checked, %d broken" % (checked, broken), file=sys.stderr)
sys.exit(1 if broken else 0)
