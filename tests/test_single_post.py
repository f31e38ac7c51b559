"""The single-POST bench reads wrk's figures from the right lines (bench/single_post.py)."""
from bench.single_post import parse_wrk

# wrk 4.1 --latency output; the thread stats' last column ends in "50%" and "99%" on purpose: an
# unanchored "50%" matched there and read "Req/Sec" as the p50 (it failed python -m bench once).
OUT = """Running 8s test @ http://127.0.0.1:41234/events
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.63ms  27.67ms   89.50%
    Req/Sec     2.60k   350.12     3.22k    71.99%
  Latency Distribution
     50%    2.84ms
     75%    3.51ms
     90%    4.40ms
     99%   10.12ms
  20712 requests in 8.01s, 7.77MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   2585.79
Transfer/sec:      0.97MB
"""


def test_parse_wrk_reads_the_latency_distribution() -> None:
    requests, rate, p50, p99, errors = parse_wrk(OUT)
    assert requests == 20712 and rate == 2585.79
    assert p50 == 2.84 and p99 == 10.12
    assert errors == 3 + 2 + 1  # non-2xx, then socket errors


def test_parse_wrk_units() -> None:
    out = OUT.replace("2.84ms", "812.00us").replace("10.12ms", "1.20s")
    _, _, p50, p99, _ = parse_wrk(out)
    assert p50 == 0.812 and p99 == 1200.0
