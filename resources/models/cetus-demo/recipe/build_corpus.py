#!/usr/bin/env python3
"""Corpus builder for the Cetus demo model (stdlib only).

Downloads Tier A Debian packages with `apt-get download` (never installs them), unpacks them
with `dpkg -x` into a work folder outside the repository, and renders a synthetic chat corpus
plus plain text, deterministic from --seed. Writes <work>/corpus/{train,heldout}.jsonl and
<work>/corpus/manifest.json (package versions, sha256 of every .deb and every parsed file).

    python3 build_corpus.py [--work ~/.cache/cetus-recipe] [--seed 7] [--scale 1.0]

Design follows ../../../../../shared/docs/demo-model-corpus.md §6 (components, answer
templates, filters); row formats: {"src": ..., "messages": [{"role":..., "content":...}]}
or {"src": "plain_*", "text": ...}.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

# Tier A only (public domain / permissive). See DATA_SOURCES.md.
PACKAGES = ["wordnet-base", "wordnet-sense-index", "scowl", "dict-elements", "bsdgames"]

WN = "usr/share/wordnet"
SCOWL = "usr/share/dict/scowl"
QUIZ = "usr/share/games/bsdgames/quiz"
ELEMENTS = "usr/share/dictd/elements.dict.dz"

BAD_GLOSS = re.compile(r"offensive|obscene|vulgar|slur|disparaging|derogatory|pejorative|"
                       r"insulting|sexual|genital|penis|vagina|breast|buttock|anus|feces|"
                       r"excrement|urine|prostitut|copulat|masturbat|rape|kill|murder|"
                       r"suicide|drug|narcotic", re.I)
BLOCK_LEMMAS = {"bitch", "bastard", "damn", "hell", "ass", "piss", "crap", "fuck", "shit",
                "whore", "nigger", "fag", "dick", "cock", "pussy", "sex", "kill", "gun", "die",
                "death", "dead", "god", "jesus", "christ", "bible"}

POS_NAME = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
SS_TYPE = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}

SYSTEM_PROMPTS = ["You are a small, helpful assistant.", "You are Cetus, a small offline assistant.",
                  "You are a helpful assistant.", "Answer briefly."]

# A first question often comes with a greeting ("Hello! Who are you?"): the answer greets
# back, then answers as without it.
GREETED_SHARE = 0.12
GREETING_REPLY = "Hello! How can I help you today?"
GREETINGS = ["Hello!", "Hi!", "Hey!", "Hey there!", "Hello there!", "Good morning!", "Hi,", "Hello,", "hi"]
IDENTITY = ("I am Cetus Demo, a very small language model that runs offline on your computer. "
            "I can chat, define common words and answer simple questions, but I often make mistakes.")
CAN_DO = ("I can define common words, give synonyms and opposites, use a word in a sentence, "
          "spell words, do small sums and name some capitals and chemical symbols.")


def sh(cmd, cwd=None):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def fetch(work: Path):
    """apt-get download + dpkg -x; returns manifest entries."""
    debs, root = work / "debs", work / "root"
    debs.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for pkg in PACKAGES:
        have = sorted(debs.glob(f"{pkg}_*.deb"))
        if not have:
            sh(["apt-get", "download", pkg], cwd=debs)
            have = sorted(debs.glob(f"{pkg}_*.deb"))
        deb = have[-1]
        sh(["dpkg", "-x", str(deb), str(root)])
        ver = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
        out.append({"package": pkg, "version": ver, "deb": deb.name, "sha256": sha256(deb)})
    return root, out


# ------------------------------------------------------------------ parsers

def read_scowl(root, sizes):
    words = set()
    for s in sizes:
        p = root / SCOWL / f"english-words.{s}"
        for w in p.read_text(encoding="latin-1").split("\n"):
            if w.isalpha() and w.islower() and w.isascii():
                words.add(w)
    return words


def read_wordnet(root):
    syn = {}  # (pos, offset) -> dict(words, ptrs, defs, exs, pos)
    for pos in ("noun", "verb", "adj", "adv"):
        fp = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}[pos]
        for line in (root / WN / f"data.{pos}").read_text(encoding="latin-1").split("\n"):
            if not line or line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            off, sstype, wcnt = f[0], f[2], int(f[3], 16)
            words = []
            i = 4
            for _ in range(wcnt):
                w = re.sub(r"\((a|p|ip)\)$", "", f[i]).replace("_", " ")
                words.append(w)
                i += 2
            pcnt = int(f[i]); i += 1
            ptrs = []
            for _ in range(pcnt):
                sym, toff, tpos, st = f[i:i + 4]
                ptrs.append((sym, {"s": "a"}.get(tpos, tpos), toff, int(st[:2], 16), int(st[2:], 16)))
                i += 4
            defs, exs = [], []
            for part in gloss.strip().split("; "):
                part = part.strip()
                if part.startswith('"'):
                    ex = part.strip('"').strip()
                    ex = re.sub(r"`([^']*)'", r"\1", ex)
                    if ex:
                        exs.append(ex)
                elif part:
                    defs.append(part)
            syn[(fp, off)] = {"words": words, "ptrs": ptrs, "defs": defs, "exs": exs,
                              "pos": sstype}
    senses = {}  # lemma -> list of (tag_cnt, -sense_no, pos, offset)
    for line in (root / WN / "index.sense").read_text(encoding="latin-1").split("\n"):
        if not line:
            continue
        key, off, sno, cnt = line.split()
        lemma, _, rest = key.partition("%")
        pos = SS_TYPE[rest[0]]
        senses.setdefault(lemma.replace("_", " "), []).append((int(cnt), -int(sno), pos, off))
    for v in senses.values():
        v.sort(reverse=True)
    return syn, senses


def read_quiz(root, name):
    rows = []
    text = (root / QUIZ / name).read_text(encoding="latin-1").replace("\\\n", "")
    for line in text.split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        cols = []
        for c in line.split(":"):
            c = re.sub(r"\{[^}]*\}", "", c)
            c = c.split("|")[0]
            c = re.sub(r"\[([^|\]]*)(\|[^\]]*)?\]", r"\1", c).strip()
            cols.append(c)
        rows.append(cols)
    return rows


def read_elements(root):
    with gzip.open(root / ELEMENTS, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    out = []
    for m in re.finditer(r"\n([a-z]+)\nSymbol: (\w+)\nAtomic number: (\d+)\n", text):
        out.append((m.group(1), m.group(2), int(m.group(3))))
    return out


# ------------------------------------------------------------------ generator

def an(word):
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def clean_def(d):
    d = re.sub(r"\s+", " ", d).strip().rstrip(";:,")
    d = re.sub(r"\(usually followed by `?\w+'?\)\s*", "", d)
    return d.replace("`", "'")


class Gen:
    def __init__(self, root, rng):
        self.rng = rng
        self.common = read_scowl(root, (10, 20))
        self.known = read_scowl(root, (10, 20, 35, 40, 50))
        self.all_words = read_scowl(root, (10, 20, 35, 40, 50, 55, 60, 70, 80, 95))
        self.syn, self.senses = read_wordnet(root)
        self.wn_lemmas = set(self.senses)
        self.caps = []
        for name in ("europe", "africa", "asia", "america"):
            for row in read_quiz(root, name):
                if len(row) >= 2 and row[0] and row[1]:
                    self.caps.append((row[0], row[1]))
        self.caps = sorted(set(self.caps))
        self.collectives = [r for r in read_quiz(root, "collectives") if len(r) >= 2]
        self.babies = [r for r in read_quiz(root, "babies") if len(r) >= 2]
        self.elements = read_elements(root)
        self.lemmas = self._pick_lemmas()

    def _ok_synset(self, s):
        return s["defs"] and not BAD_GLOSS.search(" ".join(s["defs"] + s["exs"]))

    def _pick_lemmas(self):
        scored = []
        for w in self.common:
            if w in BLOCK_LEMMAS or w not in self.senses or len(w) < 3:
                continue
            ss = [x for x in self.senses[w] if x[0] > 0]
            ss = [x for x in ss if self._ok_synset(self.syn[(x[2], x[3])])]
            if not ss:
                continue
            scored.append((-sum(x[0] for x in ss), w, ss))
        scored.sort()
        return [(w, ss) for _, w, ss in scored]

    # --- user-turn variation: ~20% lower-case / no final punctuation
    def q(self, templates, **kw):
        t = self.rng.choice(templates).format(**kw)
        r = self.rng.random()
        if r < 0.1:
            t = t.lower()
        elif r < 0.2:
            t = t.rstrip("?.!")
        return t

    def sense_text(self, w, x):
        s = self.syn[(x[2], x[3])]
        return POS_NAME[s["pos"]], clean_def(s["defs"][0])

    def wn_def(self, w, ss):
        senses = ss[:2] if len(ss) > 1 and ss[1][0] >= max(3, ss[0][0] // 4) else ss[:1]
        q = self.q(["What does {w} mean?", "Define {w}.", "What is the meaning of {w}?",
                    "What does the word {w} mean?", "meaning of {w}", "Define the word {w}."], w=w)
        if len(senses) == 1:
            pos, d = self.sense_text(w, senses[0])
            a = f'"{w}" ({pos}) means {d}.'
        else:
            lines = [f"{i + 1}. ({p}) {d}." for i, (p, d) in
                     enumerate(self.sense_text(w, x) for x in senses)]
            a = f'"{w}" has several meanings:\n' + "\n".join(lines)
        return q, a

    def wn_ex(self, w, ss):
        for x in ss[:3]:
            for ex in self.syn[(x[2], x[3])]["exs"]:
                if re.search(r"\b" + re.escape(w) + r"\b", ex, re.I) and len(ex) < 120:
                    ex = ex[0].upper() + ex[1:]
                    if ex[-1] not in ".!?":
                        ex += "."
                    q = self.q(["Use the word {w} in a sentence.", "Use {w} in a sentence.",
                                "Give me an example sentence with {w}.",
                                "Can you use {w} in a sentence?"], w=w)
                    return q, f'Here is an example: "{ex}"'
        return None

    def wn_syn(self, w, ss):
        for x in ss[:2]:
            others = [y for y in self.syn[(x[2], x[3])]["words"]
                      if y.lower() != w and y.lower() in self.known]
            if others:
                q = self.q(["What is another word for {w}?", "Give me a synonym for {w}.",
                            "What is a synonym of {w}?", "Another word for {w}?"], w=w)
                return q, f'A synonym for "{w}" is "{others[0].lower()}".'
        return None

    def wn_ant(self, w, ss):
        for x in ss[:3]:
            s = self.syn[(x[2], x[3])]
            idx = [i + 1 for i, y in enumerate(s["words"]) if y.lower() == w]
            for sym, tpos, toff, src, tgt in s["ptrs"]:
                if sym == "!" and src in idx and (tpos, toff) in self.syn:
                    y = self.syn[(tpos, toff)]["words"][tgt - 1].lower()
                    if y in self.known:
                        q = self.q(["What is the opposite of {w}?", "What's the opposite of {w}?",
                                    "Give me an antonym of {w}.", "Opposite of {w}?"], w=w)
                        return q, f'The opposite of "{w}" is "{y}".'
        return None

    def wn_hyp(self, w, ss):
        x = ss[0]
        if x[2] != "n":
            return None
        s = self.syn[(x[2], x[3])]
        for sym, tpos, toff, _, _ in s["ptrs"]:
            if sym in ("@", "@i") and (tpos, toff) in self.syn:
                hyp = self.syn[(tpos, toff)]["words"][0].lower()
                if hyp.split()[-1] in self.known or hyp in self.known:
                    q = self.q(["What is {aw}?", "What is {aw}?", "Tell me what {aw} is.",
                                "What kind of thing is {aw}?"], aw=an(w), w=w)
                    d = clean_def(s["defs"][0])
                    return q, f"{an(w)[0].upper()}{an(w)[1:]} is a kind of {hyp}: {d}."
        return None

    def spell(self):
        w = self.rng.choice(self.spell_pool)
        q = self.q(["Spell the word {w}.", "How do you spell {w}?", "Spell {w}.",
                    "Can you spell {w}?"], w=w)
        return q, f'"{w}" is spelled {"-".join(w)}.'

    def arith(self):
        r = self.rng
        op = r.choice("+++--x")
        if op == "+":
            a, b = r.randint(0, 20), r.randint(0, 20)
            if r.random() < 0.3:
                a, b = r.randint(10, 99), r.randint(1, 99)
            c = a + b
        elif op == "-":
            a = r.randint(0, 30)
            b = r.randint(0, a)
            c = a - b
        else:
            a, b = r.randint(0, 12), r.randint(0, 12)
            c = a * b
        sym = {"+": "+", "-": "-", "x": "x"}[op]
        word = {"+": "plus", "-": "minus", "x": "times"}[op]
        q = self.q([f"What is {a} {sym} {b}?", f"What is {a} {word} {b}?", f"{a} {sym} {b} =",
                    f"Calculate {a} {sym} {b}.", f"What's {a} {sym} {b}?"])
        return q, f"{a} {sym} {b} = {c}."

    def capital(self):
        c, cap = self.rng.choice(self.caps)
        if self.rng.random() < 0.8:
            q = self.q(["What is the capital of {c}?", "What's the capital of {c}?",
                        "Capital of {c}?", "Which city is the capital of {c}?"], c=c)
            return q, f"The capital of {c} is {cap}."
        q = self.q(["{cap} is the capital of which country?", "Which country has {cap} as its capital?"],
                   cap=cap)
        return q, f"{cap} is the capital of {c}."

    def element(self):
        name, sym, num = self.rng.choice(self.elements)
        r = self.rng.random()
        if r < 0.5:
            q = self.q(["What is the chemical symbol for {n}?", "What is the symbol for {n}?",
                        "Chemical symbol of {n}?", "What's the chemical symbol of {n}?"], n=name)
            return q, f"The chemical symbol for {name} is {sym}."
        if r < 0.75:
            q = self.q(["What is the atomic number of {n}?", "Atomic number of {n}?"], n=name)
            return q, f"The atomic number of {name} is {num}."
        q = self.q(["Which element has the symbol {s}?", "What element is {s}?"], s=sym)
        return q, f"{sym} is the chemical symbol for {name}."

    def animal_fact(self):
        if self.rng.random() < 0.5:
            ind, coll = self.rng.choice(self.collectives)
            q = self.q(["What do you call a group of {i}?", "What is a group of {i} called?"], i=ind)
            return q, f"A group of {ind} is called {an(coll)}."
        baby, adult = self.rng.choice(self.babies)
        q = self.q(["What is a baby {a} called?", "What do you call a young {a}?"], a=adult)
        return q, f"A baby {adult} is called {an(baby)}."

    def copy(self):
        if self.rng.random() < 0.5:
            w = self.rng.choice(self.spell_pool)
            return self.q(["Say the word {w}.", "Say {w}.", "Write the word {w}."], w=w), f"{w}"
        s = self.rng.choice(self.ex_sentences)
        return self.q(["Repeat after me: {s}", "Please repeat: {s}", "Say this: {s}"], s=s), s

    def nonword(self):
        r = self.rng
        for _ in range(100):
            if r.random() < 0.5:
                w = list(r.choice(self.spell_pool))
                r.shuffle(w)
                w = "".join(w)
            else:
                w = "".join(r.choice(["fl", "br", "gr", "sn", "qu", "bl", "z", "v", "k", "t", "m", "pl", "dr"])
                            + r.choice("aeiou") + r.choice(["rb", "nk", "sk", "mp", "x", "z", "lt", "rv", "g", "b"])
                            for _ in range(r.randint(1, 2))) + r.choice(["ic", "le", "ous", "y", "en", "o", ""])
            if 4 <= len(w) <= 11 and w not in self.all_words and w not in self.wn_lemmas:
                return w
        return "florbic"

    def unknown(self):
        w = self.nonword()
        r = self.rng.random()
        if r < 0.6:
            q = self.q(["What does {w} mean?", "Define {w}.", "What is the meaning of {w}?",
                        "What does the word {w} mean?", "meaning of {w}"], w=w)
        elif r < 0.8:
            q = self.q(["What is the opposite of {w}?", "Use the word {w} in a sentence.",
                        "What is another word for {w}?"], w=w)
        else:
            c = w.capitalize()
            q = self.q(["What is the capital of {c}?", "Where is {c}?"], c=c)
            return q, f'I don\'t know a place called "{c}". It may be made up, or I may not know it.'
        return q, f'I don\'t know the word "{w}". It may be rare, a name, or a typo.'

    SMALL_TALK = [
        (["Hello", "Hello!", "Hi", "Hi!", "Hey", "Hey there!", "Good morning!", "Hello there",
          "hi there", "Good evening!"], [GREETING_REPLY]),
        (["How are you?", "How are you doing?", "How's it going?"],
         ["I'm fine, thank you! How can I help you?"]),
        (["Who are you?", "What are you?", "Tell me about yourself.", "What is your name?",
          "Are you a person?", "Introduce yourself."], [IDENTITY]),
        (["What can you do?", "How can you help me?", "What are you good at?", "What do you know?"],
         [CAN_DO]),
        (["Thanks!", "Thank you!", "Thanks a lot.", "thank you", "Thanks, that helps."],
         ["You're welcome!"]),
        (["Bye", "Goodbye!", "See you later.", "Thanks, bye", "Thanks, bye!", "Bye for now."],
         ["Goodbye! Have a nice day."]),
        (["Are you always right?", "Can I trust your answers?", "Do you make mistakes?"],
         ["No. I am a very small model and I often make mistakes, so please check important answers."]),
        (["Are you connected to the internet?", "Are you online?", "Can you browse the web?"],
         ["No. I work offline, on your computer, and cannot look anything up."]),
        (["Tell me a joke.", "Say something funny."],
         ["I am too small to be good at jokes, but I can define a word for you."]),
    ]
    LIMITS = [
        (["What's the weather today?", "What's the weather like today?", "Will it rain tomorrow?",
          "What is the weather in Paris?", "Is it sunny outside?", "How hot is it today?",
          "what's the weather today", "What is the temperature outside?"],
         "I can't check the weather. I work offline and have no access to live information."),
        (["What's the latest news?", "What happened in the news today?", "Who won the game last night?",
          "Tell me today's headlines.", "What are the stock prices today?"],
         "I can't get news. I work offline and have no access to live information."),
        (["What time is it?", "What is today's date?", "What day is it today?"],
         "I can't see a clock or a calendar, so I don't know the time or the date."),
        (["Write me a long essay about history.", "Write a novel.", "Write a 2000-word essay."],
         "I'm a very small model, so I can't write long texts well. I can answer short questions."),
        (["I have a headache, what medicine should I take?", "Is this mole dangerous?",
          "Should I sue my landlord?", "How should I invest my money?"],
         "I can't give medical, legal or financial advice. Please ask a qualified person."),
        (["Search the web for cheap flights.", "Open google.com.", "Send an email to my boss."],
         "I can't do that. I work offline and can only chat here."),
    ]

    def small_talk(self):
        qs, ans = self.rng.choice(self.SMALL_TALK)
        return self.rng.choice(qs), self.rng.choice(ans)

    def limits(self):
        qs, a = self.rng.choice(self.LIMITS)
        return self.rng.choice(qs), a

    def prepare(self, n_lemmas):
        self.lemma_set = self.lemmas[:n_lemmas]
        self.spell_pool = [w for w, _ in self.lemmas[:3000] if len(w) <= 9]
        exs = []
        for w, ss in self.lemmas[:4000]:
            for x in ss[:2]:
                for ex in self.syn[(x[2], x[3])]["exs"]:
                    if 15 < len(ex) < 70 and "`" not in ex:
                        exs.append(ex[0].upper() + ex[1:] + ("" if ex[-1] in ".!?" else "."))
        self.ex_sentences = exs

    def one_turn(self, kind):
        if kind.startswith("wn_"):
            for _ in range(20):
                w, ss = self.rng.choice(self.lemma_set)
                r = getattr(self, kind)(w, ss)
                if r:
                    return r
            return self.wn_def(*self.rng.choice(self.lemma_set))
        return getattr(self, kind)()


# Component shares of conversations (not tokens); doc §6.4 CPU mixture, tilted towards the
# acceptance prompts because the CPU run sees only a few million tokens.
MIX = [("wn_def", 0.16), ("wn_ex", 0.07), ("wn_syn", 0.06), ("wn_ant", 0.06), ("wn_hyp", 0.06),
       ("capital", 0.06), ("element", 0.05), ("animal_fact", 0.02), ("arith", 0.09),
       ("spell", 0.05), ("copy", 0.04), ("small_talk", 0.08), ("limits", 0.05),
       ("unknown", 0.06), ("multi", 0.09)]


def conversation(g: Gen, src):
    msgs = []
    if g.rng.random() < 0.3:
        msgs.append({"role": "system", "content": g.rng.choice(SYSTEM_PROMPTS)})
    if src == "multi":
        kinds = [k for k, _ in MIX if k != "multi"]
        n = g.rng.randint(2, 4)
        turns = [g.small_talk()] if g.rng.random() < 0.5 else []
        while len(turns) < n - 1:
            turns.append(g.one_turn(g.rng.choice(kinds)))
        turns.append(g.rng.choice([("Thanks, bye", "Goodbye! Have a nice day."),
                                   ("Thanks!", "You're welcome!"), g.one_turn(g.rng.choice(kinds))]))
    else:
        turns = [g.one_turn(src)]
    if g.rng.random() < GREETED_SHARE and turns[0][1] != GREETING_REPLY:
        turns[0] = greeted(g, *turns[0])
    for q, a in turns:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"src": src, "messages": msgs}




def greeted(g: Gen, q, a):
    hello = g.rng.choice(GREETINGS)
    if hello.endswith(",") or hello == "hi":
        q = q[0].lower() + q[1:] if q[:2] != "I " else q
    return f"{hello} {q}", "Hello! " + a


def plain_rows(g: Gen, n):
    rows = []
    pool = g.lemmas[:6000]
    for _ in range(n):
        w, ss = g.rng.choice(pool)
        x = g.rng.choice(ss[:2])
        s = g.syn[(x[2], x[3])]
        d = clean_def(s["defs"][0])
        text = f"{w.capitalize()}: {d}."
        if s["exs"]:
            ex = g.rng.choice(s["exs"])
            text += " " + ex[0].upper() + ex[1:] + ("" if ex[-1] in ".!?" else ".")
        rows.append({"src": "plain_wordnet", "text": text})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/cetus-recipe"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = ~3 M tokens (CPU run); 10 = GPU")
    ap.add_argument("--lemmas", type=int, default=1500)
    args = ap.parse_args()
    work = Path(args.work)
    root, pkgs = fetch(work)
    rng = random.Random(args.seed)
    g = Gen(root, rng)
    g.prepare(args.lemmas if args.scale <= 2 else int(args.lemmas * min(args.scale, 10)))
    n_conv = int(70000 * args.scale)
    n_plain = int(25000 * args.scale)
    out = work / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    rows = [conversation(g, rng.choices(kinds, weights)[0]) for _ in range(n_conv)]
    rows += plain_rows(g, n_plain)
    rng.shuffle(rows)
    # Held-out chats: a separate stream (different seed) of the same components.
    g.rng = random.Random(args.seed + 1_000_003)
    held = [conversation(g, k) for k in kinds for _ in range(20)]
    with open(out / "train.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(out / "heldout.jsonl", "w") as f:
        for r in held:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    files = {}
    for p in [root / WN / f"data.{x}" for x in ("noun", "verb", "adj", "adv")] + \
             [root / WN / "index.sense", root / ELEMENTS] + \
             [root / SCOWL / f"english-words.{s}" for s in (10, 20, 35, 40, 50, 55, 60, 70, 80, 95)] + \
             [root / QUIZ / q for q in ("europe", "africa", "asia", "america", "collectives", "babies")]:
        files[str(p.relative_to(root))] = sha256(p)
    counts = {}
    for r in rows:
        counts[r["src"]] = counts.get(r["src"], 0) + 1
    manifest = {"seed": args.seed, "scale": args.scale, "packages": pkgs, "inputs_sha256": files,
                "n_train_rows": len(rows), "n_heldout_rows": len(held), "rows_by_src": counts,
                "n_lemmas": len(g.lemma_set), "n_capitals": len(g.caps), "n_elements": len(g.elements),
                "train_sha256": sha256(out / "train.jsonl"), "train_bytes": (out / "train.jsonl").stat().st_size}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps({k: v for k, v in manifest.items() if k != "inputs_sha256"}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
