# Helpers sourced by the shell benchmarks that read training speed from nclab's progress bar.
steps() {   # the last step count of the tqdm bar in a log
    python3 -c "import re, sys; m = re.findall(r'(\d+)/\d+ \[', open(sys.argv[1], errors='ignore').read()); print(m[-1] if m else 0)" "$1"
}
rate() { python3 -c "import sys; a, b, t0, t1 = map(float, sys.argv[1:]); print(f'{(b - a) / (t1 - t0):.2f}')" "$@"; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$@"; }
