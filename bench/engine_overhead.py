"""What the worker process costs: Enclave's tokens/s ÷ plain llama-cpp-python's.

Both run in this one invocation with identical settings, alternating, so machine noise
hits both alike. Prompt processing is timed from the request to the moment the whole
prompt is in the KV cache; generation from the first token to the last, as the caller
sees them (pipe and process hops included).

    python bench/engine_overhead.py MODEL.gguf [--prompt-tokens 1024] [--gen-tokens 128]

Make a model with ``python -m tests.tiny_models bench.gguf --kind bench`` if you have
none. Targets: generation >= 0.97, prompt processing >= 0.98.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import llama_cpp

from inference.protocol import Done, Generate, ModelSettings, Progress, Sampling, Token
from inference.worker import Worker

WORDS = (
    "the model reads every document in the secure library and answers each question offline"
).split()


def prompts(llm: llama_cpp.Llama, n_tokens: int, reps: int) -> list[str]:
    """Distinct prompts of about ``n_tokens`` (a different first word each), so that no
    run reuses another's KV cache."""
    words: list[str] = []
    while len(llm.tokenize(" ".join(words).encode())) < n_tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    body = " ".join(words[1:])
    return [f"{WORDS[r % len(WORDS)]}{r} {body}" for r in range(reps)]


def plain_run(llm: llama_cpp.Llama, text: str, gen_tokens: int) -> tuple[int, float, float]:
    tokens = llm.tokenize(text.encode())
    start = time.perf_counter()
    times = []
    t_prompt = None
    for _ in llm.generate(tokens, temp=0.0):  # prompts differ from the first token: no reuse
        now = time.perf_counter()
        if t_prompt is None:
            t_prompt = now - start
        times.append(now)
        if len(times) == gen_tokens:
            break
    return len(tokens), t_prompt, (times[-1] - times[0]) / (len(times) - 1)


def enclave_run(worker: Worker, text: str, gen_tokens: int) -> tuple[int, float, float]:
    start = time.perf_counter()
    t_prompt = None
    times = []
    n_prompt = 0
    sampling = Sampling(temperature=0, max_tokens=gen_tokens)
    for event in worker.generate(Generate(prompt=text, sampling=sampling)):
        now = time.perf_counter()
        if isinstance(event, Progress):
            n_prompt = event.total
        elif isinstance(event, Token) and event.id is not None:
            if t_prompt is None:
                t_prompt = now - start
            times.append(now)
        elif isinstance(event, Done):
            break
        elif not isinstance(event, Token):  # a Token without id: text held back until the end
            raise SystemExit(f"worker failed: {event}")
    return n_prompt, t_prompt, (times[-1] - times[0]) / (len(times) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    extra = {"n_threads": args.threads} if args.threads else {}
    settings = ModelSettings(path=str(args.model), n_ctx=args.prompt_tokens + args.gen_tokens + 256,
                             flash_attn=False, **extra)
    llm = llama_cpp.Llama(str(args.model), n_ctx=settings.n_ctx, n_batch=settings.n_batch, n_ubatch=settings.n_ubatch,
                          n_threads=settings.n_threads, n_threads_batch=settings.n_threads, flash_attn=False,
                          verbose=False)
    with tempfile.TemporaryDirectory() as tmp, Worker(Path(tmp) / "llama.log") as worker:
        worker.load(settings)
        texts = prompts(llm, args.prompt_tokens, args.reps + 1)
        plain_run(llm, texts[0], 8)  # warm both up
        enclave_run(worker, texts[0], 8)
        plain, ours = [], []
        for text in texts[1:]:
            plain.append(plain_run(llm, text, args.gen_tokens))
            ours.append(enclave_run(worker, text, args.gen_tokens))

    def rates(runs: list[tuple[int, float, float]]) -> tuple[float, float]:
        pp = statistics.median(n / t for n, t, _ in runs)
        tg = statistics.median(1 / dt for _, _, dt in runs)
        return pp, tg

    (pp_plain, tg_plain), (pp_ours, tg_ours) = rates(plain), rates(ours)
    print(f"model: {args.model.name}  prompt: {plain[0][0]} tokens  generated: {args.gen_tokens} tokens  "
          f"threads: {settings.n_threads}  runs: {args.reps}")
    print(f"{'':24}{'plain llama-cpp-python':>24}{'Enclave worker':>18}{'ratio':>8}")
    print(f"{'prompt tokens/s':24}{pp_plain:>24.1f}{pp_ours:>18.1f}{pp_ours / pp_plain:>8.3f}")
    print(f"{'generation tokens/s':24}{tg_plain:>24.1f}{tg_ours:>18.1f}{tg_ours / tg_plain:>8.3f}")
    print(f"ratios: prompt processing {pp_ours / pp_plain:.3f} (target >= 0.98), "
          f"generation {tg_ours / tg_plain:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
