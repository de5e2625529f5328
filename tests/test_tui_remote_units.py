"""tui.remote without a server: metrics names, SSE frames, retry delays, the --server settings."""

from __future__ import annotations

import httpx
import pytest

from telemetry import PoolSnapshotEvent
from tests.server_harness import free_port
from tui.cli import SettingsError, parse_settings
from tui.remote.errors import status_error, transport_error
from tui.remote.metrics_view import ServerFigures, missing, read_figures
from tui.remote.pool_mirror import PoolMirror
from tui.remote.watcher import retry_delay_s
from tui.remote.wire import MessagesTemplate, SseParser, decode_messages
from tui.session_log import SessionLog, open_store
from tui.settings import TuiSettings

# The shape of vLLM's /metrics (v1 engine): names, labels, counters with _total, a histogram.
VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.375
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1000.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 400.0
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.5
"""


def test_vllm_metrics_give_kv_use_prefix_hits_queue_and_preemptions():
    figures = read_figures(VLLM_METRICS)
    assert figures.kv_usage == 0.375
    assert figures.prefix_hit_rate == 0.4
    assert (figures.running, figures.waiting, figures.preemptions) == (3, 1, 2)
    assert figures.ttft_mean_s == pytest.approx(0.1)
    assert missing(figures) == ()


def test_metrics_without_kv_names_say_what_is_missing():
    figures = read_figures("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n")
    assert figures == ServerFigures(num_metrics=1)
    assert missing(figures) == ("KV cache usage", "prefix cache hits", "running/waiting requests", "preemptions")


def test_llama_cpp_names():
    figures = read_figures("llamacpp:kv_cache_usage_ratio 0.5\nllamacpp:requests_processing 2\n"
                           "llamacpp:requests_deferred 1\n")
    assert (figures.kv_usage, figures.running, figures.waiting) == (0.5, 2, 1)


def test_sse_frames_skip_comments_and_join_data_lines():
    parser = SseParser()
    lines = [": keepalive", "", "event: gather", "data: {\"a\":", "data: 1}", "", "data: [DONE]", ""]
    frames = [frame for line in lines if (frame := parser.feed(line)) is not None]
    assert [(f.event, f.data) for f in frames] == [("gather", "{\"a\":\n1}"), ("message", "[DONE]")]


def test_the_messages_template_round_trips_the_conversation():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüße \"du\""}]
    assert decode_messages(MessagesTemplate().apply_chat_template(messages, add_generation_prompt=True)) == messages
    with pytest.raises(ValueError, match="whole conversation"):
        decode_messages("<|im_start|>user")


def test_retry_delays_back_off_to_ten_seconds():
    assert [retry_delay_s(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_errors_say_what_happened_and_what_to_do():
    refused = status_error("http://h:1", 401, b'{"error": {"message": "invalid API key"}}')
    assert "refused the API key (HTTP 401: invalid API key)" in str(refused) and "--api-key" in str(refused)
    try:
        httpx.get(f"http://127.0.0.1:{free_port()}/v1/models", timeout=2)
    except httpx.ConnectError as exc:
        error = transport_error("http://127.0.0.1", exc)
    assert error.unreachable and "cannot reach the server" in str(error) and "blockpool serve" in str(error)


def test_server_settings_from_the_command_line_and_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "absent.toml"))
    settings = parse_settings(["--server", "http://127.0.0.1:8000/", "--api-key", "k", "--model", "m"])
    assert (settings.server, settings.api_key.get_secret_value(), settings.model) == ("http://127.0.0.1:8000", "k", "m")
    assert "'k'" not in repr(settings)
    monkeypatch.setenv("BLOCKPOOL_SERVER", "https://gpu-box:8000")
    monkeypatch.setenv("BLOCKPOOL_API_KEY", "from-env")
    settings = parse_settings([])
    assert (settings.server, settings.api_key.get_secret_value()) == ("https://gpu-box:8000", "from-env")
    for bad in ("127.0.0.1:8000", "http://127.0.0.1:8000/v1"):
        with pytest.raises(SettingsError, match="--server: .*without /v1"):
            parse_settings(["--server", bad])


def test_the_session_database_never_holds_the_api_key(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "absent.toml"))
    settings = TuiSettings(server="http://127.0.0.1:8000", api_key="secret-key-1", data_dir=tmp_path, resume=False)
    store, _ = open_store(settings)
    log = SessionLog(store, settings)
    saved = store.session(log.session_id).settings
    assert saved["server"] == "http://127.0.0.1:8000" and "api_key" not in saved
    assert b"secret-key-1" not in (tmp_path / "sessions.db").read_bytes()


def test_the_pool_mirror_keeps_the_servers_block_format():
    fields = dict(total_blocks=8, used_blocks=1, n_layers=1, block_tokens=16, bytes_per_block=8704,
                  layer_types=("global",), owners=((3, 0, "conv-1"),))
    mirror = PoolMirror()
    assert mirror.snapshot().kv_format == ""  # nothing known before the server's first snapshot
    mirror.apply(PoolSnapshotEvent(**fields, kv_format="q8/g64"))
    assert (mirror.snapshot().kv_format, mirror.snapshot().bytes_per_block) == ("q8/g64", 8704)
    mirror.apply(PoolSnapshotEvent(**fields))  # a server from before quantized blocks names no format
    assert mirror.snapshot().kv_format == ""
