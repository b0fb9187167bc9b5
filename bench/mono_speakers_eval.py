"""Speaker labels on one channel, step 2 of 2 (see bench/mono_speakers_prep.py): embed each
segment with resemblyzer's d-vector model, cluster the segments online (a segment joins the most
similar speaker above THRESHOLD, else starts a new one), and score the share of words whose
speaker, under the best mapping of clusters to the two parties, is the one talking."""

import itertools
import json
import sys
from pathlib import Path

import librosa
import numpy as np
from resemblyzer import VoiceEncoder

OUT = Path(__file__).resolve().parent / "results" / "mono_speakers"
TOLERANCE = 0.35


def main() -> None:
    threshold = float(sys.argv[1]) if len(sys.argv) > 1 else 0.8
    encoder = VoiceEncoder("cpu")
    data = json.loads((OUT / "segments.json").read_text())
    for name, call in data.items():
        audio = np.load(OUT / (name.replace("/", "_") + ".npy"))
        if call["rate"] != 16000:
            audio = librosa.resample(audio, orig_sr=call["rate"], target_sr=16000)
        centroids: list[np.ndarray] = []
        labels = []
        for segment in call["segments"]:
            embedding = encoder.embed_utterance(
                audio[int(segment["start"] * 16000) : int(segment["end"] * 16000)]
            )
            similarity = [float(np.dot(embedding, c / np.linalg.norm(c))) for c in centroids]
            if similarity and max(similarity) >= threshold:
                k = int(np.argmax(similarity))
                centroids[k] = centroids[k] + embedding
            else:
                centroids.append(embedding.copy())
                k = len(centroids) - 1
            labels.append(k)

        def talking(middle: float, call: dict = call) -> int | None:
            for channel, segments in enumerate(call["channel_segments"]):
                if any(lo - TOLERANCE <= middle <= hi + TOLERANCE for _, lo, hi in segments):
                    return channel
            return None

        words = [(w, k) for s, k in zip(call["segments"], labels, strict=True) for w in s["words"]]
        best = max(
            sum(1 for w, k in words if {a: 0, b: 1}.get(k) == talking((w["start"] + w["end"]) / 2))
            for a, b in itertools.permutations(range(max(2, len(centroids))), 2)
        )
        print(
            json.dumps(
                {
                    "call": name,
                    "threshold": threshold,
                    "clusters": len(centroids),
                    "right_speaker": round(best / len(words), 3),
                }
            )
        )


if __name__ == "__main__":
    main()
