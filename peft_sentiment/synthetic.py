"""Synthetic movie reviews for the offline smoke recipe and the tests.

`python -m peft_sentiment.synthetic` rewrites the shipped set in peft_sentiment/smoke_data/.
Each review mixes neutral sentences with sentiment phrases; its label is the side with more phrases,
so a model must read the words, while the set stays easy enough to learn in seconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SMOKE_DIR = Path(__file__).resolve().parent / "smoke_data"
SUBJECTS = ["the movie", "this film", "the story", "the acting", "the ending", "the director's work",
            "the soundtrack", "the plot", "the cast", "the script"]
POSITIVE = ["was wonderful", "was brilliant", "moved me deeply", "was a delight", "is a masterpiece",
            "was superb and touching", "felt fresh and clever", "is beautifully made", "was great fun",
            "deserves every award"]
NEGATIVE = ["was terrible", "was boring", "made no sense", "was a waste of time", "is a mess",
            "was dull and predictable", "felt cheap and lazy", "is painfully bad", "was awful",
            "should be forgotten"]
NEUTRAL = ["I watched it on a Sunday evening.", "It runs a little over two hours.",
           "My friend picked it at the cinema.", "The film was shot in Canada.",
           "It is based on a novel.", "I saw it with my family.", "The trailer came out last year.",
           "It was released in the autumn."]


def make_reviews(n: int, seed: int) -> list[dict[str, object]]:
    """`n` reviews with balanced labels: 1 (positive) or 0 (negative)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        major, minor = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        phrases = [f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(major)}." for _ in range(rng.randint(2, 3))]
        if rng.random() < 0.4:  # one contrary remark, outweighed by the rest
            phrases.append(f"Still, {rng.choice(SUBJECTS)} {rng.choice(minor)}.")
        sentences = phrases + rng.sample(NEUTRAL, rng.randint(1, 3))
        rng.shuffle(sentences)
        rows.append({"text": " ".join(sentences), "label": label})
    rng.shuffle(rows)
    return rows


# Graded sentiment for more than two classes: class strength decides which phrases a review holds.
STRONG_POSITIVE = ["is a masterpiece", "deserves every award", "was superb and touching", "moved me deeply"]
MILD_POSITIVE = ["was pleasant enough", "was fairly good", "had some nice moments", "was decent"]
MILD_NEGATIVE = ["was a bit slow", "was somewhat weak", "had some dull parts", "was rather forgettable"]
STRONG_NEGATIVE = ["was painfully bad", "was a waste of time", "should be forgotten", "was awful"]
GRADES = {
    3: [NEGATIVE, [], POSITIVE],
    5: [STRONG_NEGATIVE, MILD_NEGATIVE, [], MILD_POSITIVE, STRONG_POSITIVE],
}


def make_graded_reviews(n: int, seed: int, classes: int = 3,
                        shares: list[float] | None = None) -> list[dict[str, object]]:
    """`n` reviews labelled 0..classes-1 (3: negative, neutral, positive; 5: very negative to very
    positive); a neutral review holds no sentiment phrase. `shares`: each class's share of the
    reviews (default equal), for imbalanced sets."""
    if classes not in GRADES:
        raise ValueError(f"classes must be one of {sorted(GRADES)}, got {classes}")
    rng = random.Random(seed)
    shares = shares or [1.0] * classes
    counts = [int(n * w / sum(shares)) for w in shares]
    for i in range(n - sum(counts)):
        counts[i % classes] += 1
    rows = []
    for label, count in enumerate(counts):
        pool = GRADES[classes][label]
        for _ in range(count):
            sentences = [f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(pool)}." for _ in range(rng.randint(2, 3))
                         ] if pool else []
            sentences += rng.sample(NEUTRAL, rng.randint(1, 3))
            rng.shuffle(sentences)
            rows.append({"text": " ".join(sentences), "label": label})
    rng.shuffle(rows)
    return rows


def write_smoke_data(folder: Path = SMOKE_DIR) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", 400, 1), ("test", 100, 2), ("validation", 100, 3)):
        with (folder / f"{split}.jsonl").open("w") as f:
            for row in make_reviews(n, seed):
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    write_smoke_data()
