"""The chart (gnuplot) and perf/RESULTS.md: the run's summary goes to the
end of its run log, and the summary at the top names the latest run."""
import os
import shutil
import subprocess

LOG_HEADING = "## Run log"
LATEST_MARK = "<!-- latest-run -->"

GNUPLOT = """\
set terminal pngcairo size 1400,600 font ",10" noenhanced
set output "{out}/chart.png"
set title "Server CPU per request / message (median µs, lower is better) — {model}, {ncpu} cores, Linux {kernel}, {stamp}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set datafile missing "-"
set key top left
set ylabel "server CPU µs per request or message"
set xtics rotate by -25
set grid ytics
set logscale y
plot for [i=2:9] "{out}/chart.dat" using i:xtic(1) title columnheader(i)
"""


def chart(ctx, run):
    """chart.png from chart.dat; a note when gnuplot fails."""
    dat = os.path.join(ctx.out, "chart.dat")
    with open(dat) as f:
        if len(f.readlines()) <= 1 or not shutil.which("gnuplot"):
            return False
    script = GNUPLOT.format(out=ctx.out, **run)
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        ctx.note("perf/run: gnuplot failed:")
        ctx.note(r.stderr.rstrip())
    return os.path.exists(os.path.join(ctx.out, "chart.png"))


def latest_line(run, csv_rel):
    q = " --quick" if run["quick"] else ""
    return (f"{LATEST_MARK}Latest `perf/run{q}` in the run log: **{run['stamp']}** "
            f"({run['model']}, {run['ncpu']} cores, Linux {run['kernel']}; raw numbers "
            f"`{csv_rel}`). The tables below are written by hand from the runs they name.")


def append_results(path, summary, run, csv_rel, chart_rel):
    """Append the summary to the run log (the file's last section) and point
    the top summary's latest-run line at it."""
    with open(path) as f:
        text = f.read()
    if LOG_HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{LOG_HEADING}\n"
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(LATEST_MARK):
            lines[i] = latest_line(run, csv_rel)
            break
    text = "\n".join(lines)
    if not text.endswith("\n"):
        text += "\n"
    text += f"\n{summary}\nRaw numbers: `{csv_rel}`; chart: `{chart_rel}`.\n"
    with open(path, "w") as f:
        f.write(text)

