"""serving.model_servers.options: tensorflow_model_server 2.16's flags, checks and config files."""
import dataclasses
import os

import pytest

from serving.model_servers import options as so
from serving.model_servers import server_config as sc
from serving.model_servers.options import OptionsError, parse_args, schedulable_cpus, usage

BASE = ["--model_base_path=/models/mnist"]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error_of(fn, *args):
    with pytest.raises(OptionsError) as info:
        fn(*args)
    return str(info.value)


# ------------------------------------------------------------------------------------------------ defaults

def test_defaults_follow_tf_serving():
    o = parse_args(BASE)
    cpus = len(os.sched_getaffinity(0))
    assert (o.port, o.rest_api_port, o.rest_api_timeout_in_ms) == (8500, 0, 30000)
    assert o.rest_api_num_threads == o.grpc_max_threads == 4 * cpus
    assert o.model_name == "default" and o.model_base_path == "/models/mnist" and o.model_config_file == ""
    assert o.file_system_poll_wait_seconds == 1 and o.model_config_file_poll_wait_seconds == 0
    assert (o.max_num_load_retries, o.load_retry_interval_micros) == (5, 60_000_000)
    assert o.enable_batching is False and o.enable_model_warmup is True and o.saved_model_tags == "serve"
    assert o.rest_api_enable_cors_support is False and o.rest_api_enabled is False
    assert o.warnings == () and o.show_help is False and o.version is False


def test_dataclass_defaults_match_flag_table():
    fields = {f.name: f for f in dataclasses.fields(so.ServerOptions)}
    for name, _, default, _, status in so._flag_table():
        if status is None:
            f = fields[name]
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert value == default, name
    assert set(fields) - {r[0] for r in so._supported()} == {"show_help", "warnings"}


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_args(BASE).port = 1


# ------------------------------------------------------------------------------------------------ every flag

FLAG_VALUES = {
    "port": ("9000", 9000), "grpc_socket_path": ("/tmp/s.sock", "/tmp/s.sock"), "rest_api_port": ("8501", 8501),
    "rest_api_num_threads": ("3", 3), "rest_api_timeout_in_ms": ("500", 500),
    "rest_api_enable_cors_support": ("true", True), "enable_batching": ("true", True),
    "allow_version_labels_for_unavailable_models": ("true", True),
    "batching_parameters_file": ("/b.txt", "/b.txt"), "enable_per_model_batching_parameters": ("true", True),
    "model_config_file": ("/m.config", "/m.config"), "model_config_file_poll_wait_seconds": ("60", 60),
    "model_name": ("mnist", "mnist"), "model_base_path": ("/elsewhere", "/elsewhere"),
    "num_load_threads": ("2", 2), "num_unload_threads": ("3", 3), "max_num_load_retries": ("0", 0),
    "load_retry_interval_micros": ("-1", -1), "file_system_poll_wait_seconds": ("0", 0),
    "tensorflow_session_parallelism": ("4", 4), "tensorflow_session_config_file": ("/s.txt", "/s.txt"),
    "tensorflow_intra_op_parallelism": ("2", 2), "tensorflow_inter_op_parallelism": ("3", 3),
    "per_process_gpu_memory_fraction": ("0.5", 0.5), "saved_model_tags": ("serve,gpu", "serve,gpu"),
    "grpc_channel_arguments": ("grpc.max_connection_age_ms=2000", "grpc.max_connection_age_ms=2000"),
    "grpc_max_threads": ("7", 7), "enable_model_warmup": ("false", False),
    "num_request_iterations_for_warmup": ("5", 5), "monitoring_config_file": ("/mon.txt", "/mon.txt"),
    "prefer_tflite_model": ("true", True), "num_tflite_pools": ("3", 3), "enable_profiler": ("false", False),
    "enable_signature_method_name_check": ("true", True), "enable_grpc_healthcheck_service": ("true", True),
    "num_serving_processes": ("3", 3),
    "max_request_tensor_bytes": ("4096", 4096),
    "rest_api_max_body_bytes": ("4096", 4096), "rest_api_header_timeout_in_ms": ("500", 500),
    "rest_api_idle_timeout_in_ms": ("0", 0), "rest_api_max_connections": ("10", 10),
}


def test_every_supported_flag_is_covered_here():
    assert set(FLAG_VALUES) | {"version"} == {r[0] for r in so._supported()}


@pytest.mark.parametrize("name", sorted(FLAG_VALUES))
def test_every_flag_sets_its_field(name):
    text, expected = FLAG_VALUES[name]
    extra = ["--enable_batching"] if name == "batching_parameters_file" else []
    o = parse_args(BASE + extra + [f"--{name}={text}"])
    assert getattr(o, name) == expected
    assert getattr(o, name) != getattr(parse_args(BASE), name)


def test_last_occurrence_wins_like_tensorflow_flags():
    assert parse_args(BASE + ["--port=1", "--port=2"]).port == 2


@pytest.mark.parametrize("arg, expected", [
    ("--enable_batching", True), ("--enable_batching=true", True), ("--enable_batching=false", False),
    ("--enable_batching=TRUE", True), ("--enable_batching=False", False),
])
def test_bool_forms(arg, expected):
    assert parse_args(BASE + [arg]).enable_batching is expected


def test_default_true_bool_can_be_turned_off():
    assert parse_args(BASE + ["--enable_model_warmup=false"]).enable_model_warmup is False


@pytest.mark.parametrize("arg", ["--enable_batching=yes", "--enable_batching=1", "--enable_batching="])
def test_bad_bool_values(arg):
    assert "--enable_batching=true or --enable_batching=false" in error_of(parse_args, BASE + [arg])


@pytest.mark.parametrize("arg", ["--port=abc", "--port=85.5", "--port=", "--port=0x10",
                                 "--per_process_gpu_memory_fraction=half", "--per_process_gpu_memory_fraction=nan"])
def test_bad_number_values(arg):
    assert "Couldn't interpret value" in error_of(parse_args, BASE + [arg])


def test_int32_overflow_is_rejected_but_int64_flag_takes_it():
    assert "does not fit in an int32" in error_of(parse_args, BASE + ["--rest_api_timeout_in_ms=2147483648"])
    assert parse_args(BASE + ["--load_retry_interval_micros=2147483648"]).load_retry_interval_micros == 2**31


@pytest.mark.parametrize("argv, fragment", [
    (["--no_such_flag=1"], "Unknown argument '--no_such_flag=1'"),
    (["--model_nam=x"], "Unknown argument"),  # no prefix abbreviations
    (["serve"], "Unknown argument 'serve'"),
    (["-port=8500"], "Unknown argument"),
    (["--"], "Unknown argument"),
])
def test_unknown_arguments_are_errors(argv, fragment):
    assert fragment in error_of(parse_args, BASE + argv)


def test_value_flags_need_equals():
    msg = error_of(parse_args, ["--model_base_path", "/models/mnist"])
    assert "--model_base_path needs a value" in msg and "--model_base_path=VALUE" in msg


def test_channel_arguments_become_typed_pairs():
    o = parse_args(BASE + ["--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x"])
    assert o.channel_arguments() == [("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "x")]
    assert parse_args(BASE).channel_arguments() == []


def test_bad_channel_argument():
    assert "is not key=value" in error_of(parse_args, BASE + ["--grpc_channel_arguments=a=1,oops"])


# ------------------------------------------------------------------------------------------ help and version

def test_help_lists_every_main_cc_flag_with_default():
    text = so.usage()
    for name, kind, default, _, _ in so._flag_table():
        assert f"--{name} <{kind}>" in text, name
    flat = " ".join(text.split())
    assert "TCP port to listen on for gRPC/HTTP API. Disabled if port set to zero. (default: 8500)" in flat
    assert "Timeout for HTTP/REST API calls. (default: 30000)" in flat
    assert "enable batching (default: false)" in flat
    assert "[unsupported by this server:" in flat and "[ignored by this server:" in flat


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--version"]])
def test_help_and_version_skip_validation(argv):
    o = parse_args(argv)  # no model path: would otherwise be an error
    assert o.show_help or o.version


# ------------------------------------------------------------------------------------------------- checks

def test_neither_model_source_given():
    msg = error_of(parse_args, [])
    assert "Both --model_base_path and --model_config_file are empty" in msg and "--model_config_file=" in msg


def test_both_model_sources_follow_tf_serving_and_warn():
    o = parse_args(["--model_config_file=/m.config", "--model_name=x", "--model_base_path=/models/x"])
    assert o.model_config_file == "/m.config"
    assert any("ignored because --model_config_file is set" in w for w in o.warnings)
    assert parse_args(["--model_config_file=/m.config"]).warnings == ()


@pytest.mark.parametrize("arg, flag", [("--port=-1", "port"), ("--port=65536", "port"),
                                       ("--rest_api_port=70000", "rest_api_port"),
                                       ("--rest_api_port=-5", "rest_api_port")])
def test_bad_ports(arg, flag):
    assert f"--{flag}=" in error_of(parse_args, BASE + [arg]) and "1 to 65535" in error_of(parse_args, BASE + [arg])


def test_grpc_needs_a_port_or_socket():
    assert "At least one of --port or --grpc_socket_path" in error_of(parse_args, BASE + ["--port=0"])
    assert parse_args(BASE + ["--port=0", "--grpc_socket_path=/tmp/g.sock"]).port == 0


def test_rest_port_equal_to_grpc_port_disables_rest_with_warning():
    o = parse_args(BASE + ["--port=9000", "--rest_api_port=9000"])
    assert o.rest_api_enabled is False and "--rest_api_port cannot be same as --port" in o.warnings[0]
    assert parse_args(BASE + ["--rest_api_port=8501"]).rest_api_enabled is True


def test_batching_file_requires_enable_batching():
    assert "without setting --enable_batching" in error_of(parse_args, BASE + ["--batching_parameters_file=/b"])


def test_all_three_parallelism_flags_conflict():
    argv = BASE + ["--tensorflow_session_parallelism=1", "--tensorflow_intra_op_parallelism=1",
                   "--tensorflow_inter_op_parallelism=1"]
    assert "You cannot configure all" in error_of(parse_args, argv)


@pytest.mark.parametrize("arg, fragment", [
    ("--rest_api_num_threads=0", "must be at least 1"), ("--grpc_max_threads=0", "must be at least 1"),
    ("--num_load_threads=-1", "must not be negative"), ("--max_num_load_retries=-1", "must not be negative"),
    ("--per_process_gpu_memory_fraction=1.5", "between 0.0 and 1.0"),
    ("--max_request_tensor_bytes=0", "must be at least 1"),
])
def test_range_checks(arg, fragment):
    assert fragment in error_of(parse_args, BASE + [arg])


@pytest.mark.parametrize("arg", ["--ssl_config_file=/ssl.txt", "--use_alts_credentials",
                                 "--platform_config_file=/p.txt",
                                 "--mixed_precision=bfloat16", "--thread_pool_factory_config_file=/t"])
def test_unsupported_flags_error_when_set(arg):
    name = arg[2:].partition("=")[0]
    assert f"--{name} is not supported by this server" in error_of(parse_args, BASE + [arg])


def test_unsupported_flags_at_their_default_are_fine():
    assert parse_args(BASE + ["--use_alts_credentials=false", "--ssl_config_file="]).warnings == ()


def test_tflite_flags_are_honoured():
    o = parse_args(BASE + ["--prefer_tflite_model=true", "--num_tflite_pools=3"])
    assert (o.prefer_tflite_model, o.num_tflite_pools, o.warnings) == (True, 3, ())
    assert parse_args(BASE).prefer_tflite_model is False
    assert parse_args(BASE).num_tflite_pools == schedulable_cpus()
    (warning,) = parse_args(BASE + ["--num_tflite_interpreters_per_pool=4"]).warnings
    assert warning.startswith("--num_tflite_interpreters_per_pool is accepted for compatibility and ignored")


def test_enable_profiler_is_accepted_and_said_to_be_not_provided():
    assert parse_args(BASE).enable_profiler is True
    for value in ("true", "false"):
        o = parse_args(BASE + [f"--enable_profiler={value}"])
        assert (o.enable_profiler, o.warnings) == (value == "true", ())
    text = " ".join(usage().split())
    entry = text[text.index("--enable_profiler"):][:300]
    assert "Not provided by this server" in entry and "ProfilerService" in entry


def test_ignored_flags_warn_only_when_changed():
    o = parse_args(BASE + ["--flush_filesystem_caches=false", "--enable_profiler=true", "--skip_initialize_tpu"])
    assert len(o.warnings) == 2
    assert any("--flush_filesystem_caches is accepted for compatibility and ignored" in w for w in o.warnings)
    assert not hasattr(o, "flush_filesystem_caches")


# --------------------------------------------------------------------------------------------- model config

MULTI = """
model_config_list {
  config { name: 'latest3' base_path: '/models/a' model_platform: 'tensorflow'
           model_version_policy { latest { num_versions: 3 } } }
  config { name: 'every' base_path: 'gs://bucket/b' model_platform: 'tensorflow'
           model_version_policy { all {} } }
  config { name: 'pinned' base_path: '/models/c' model_platform: 'tensorflow'
           model_version_policy { specific { versions: 42 versions: 43 } }
           version_labels { key: 'stable' value: 42 }
           version_labels { key: 'canary' value: 43 } }
  config { name: 'plain' base_path: '/models/d' model_type: TENSORFLOW }
}
"""


def config_options(tmp_path, text, *extra):
    return parse_args([f"--model_config_file={write(tmp_path, 'models.config', text)}", *extra])


def test_single_model_from_flags():
    (spec,) = sc.load_model_config(parse_args(["--model_name=mnist", "--model_base_path=/models/mnist"]))
    assert spec == sc.ModelSpec("mnist", "/models/mnist", "tensorflow", sc.VersionPolicy("latest", 1), {})


def test_config_file_with_all_policies_and_labels(tmp_path):
    specs = sc.load_model_config(config_options(tmp_path, MULTI, "--allow_version_labels_for_unavailable_models"))
    by_name = {s.name: s for s in specs}
    assert [s.name for s in specs] == ["latest3", "every", "pinned", "plain"]
    assert by_name["latest3"].version_policy == sc.VersionPolicy("latest", 3)
    assert by_name["every"].version_policy == sc.VersionPolicy("all", None)
    assert by_name["every"].base_path == "gs://bucket/b"
    assert by_name["pinned"].version_policy == sc.VersionPolicy("specific", None, (42, 43))
    assert by_name["pinned"].version_labels == {"stable": 42, "canary": 43}
    assert by_name["plain"].model_platform == "tensorflow"  # from the deprecated model_type
    assert by_name["plain"].version_policy == sc.VersionPolicy("latest", 1)


def test_latest_zero_counts_as_one(tmp_path):
    text = "model_config_list { config { name: 'm' base_path: '/m' model_platform: 'tensorflow' " \
           "model_version_policy { latest { } } } }"
    assert sc.load_model_config(config_options(tmp_path, text))[0].version_policy.num_versions == 1


def test_labels_at_startup_need_the_allow_flag(tmp_path):
    msg = error_of(sc.load_model_config, config_options(tmp_path, MULTI))
    assert "Request to assign label to version 43 of model pinned" in msg
    assert "--allow_version_labels_for_unavailable_models" in msg


def test_label_outside_specific_versions_is_allowed_like_tf_serving(tmp_path):
    text = MULTI.replace("key: 'canary' value: 43", "key: 'canary' value: 99")
    specs = sc.load_model_config(config_options(tmp_path, text, "--allow_version_labels_for_unavailable_models"))
    assert specs[2].version_labels["canary"] == 99


def test_label_rules_on_reload():
    spec = sc.ModelSpec("m", "/m", version_labels={"stable": 2})
    sc.check_version_labels(spec, available_versions={2})
    assert "version 2 of model m" in error_of(sc.check_version_labels, spec, {1})
    sc.check_version_labels(spec, {1}, current_labels={"stable": 2}, allow_unavailable=True)  # unchanged label
    with pytest.raises(OptionsError, match="move a label only onto a version that is already loaded"):
        sc.check_version_labels(spec, {1}, current_labels={"stable": 1}, allow_unavailable=True)


@pytest.mark.parametrize("text, fragment", [
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'tensorflow' } "
     "config { name: 'a' base_path: '/b' model_platform: 'tensorflow' } }",
     "Illegal to list model a multiple times in config list"),
    ("model_config_list { config { base_path: '/a' model_platform: 'tensorflow' } }", "empty name"),
    ("model_config_list { config { name: 'a' model_platform: 'tensorflow' } }",
     "Expected model a to have an absolute path or URI; got base_path()=''"),
    ("model_config_list { config { name: 'a' base_path: 'models/a' model_platform: 'tensorflow' } }",
     "got base_path()='models/a'"),
    ("model_config_list { config { name: 'a' base_path: '/a' } }", "Illegal setting neither"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'tensorflow' model_type: TENSORFLOW } }",
     "Illegal setting both"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }",
     "Model a requests unsupported platform onnx"),
    ("custom_model_config { }", "does not yet support custom model config"),
])
def test_bad_model_configs(tmp_path, text, fragment):
    msg = error_of(sc.load_model_config, config_options(tmp_path, text))
    assert fragment in msg and "models.config" in msg


def test_relative_model_base_path_flag_is_rejected():
    assert "Expected model default to have an absolute path" in error_of(
        sc.load_model_config, parse_args(["--model_base_path=models/mnist"]))


def test_empty_model_name_flag_is_rejected():
    assert "empty name" in error_of(sc.load_model_config, parse_args(BASE + ["--model_name="]))


def test_empty_config_serves_nothing(tmp_path):
    assert sc.load_model_config(config_options(tmp_path, "")) == []
    assert sc.load_model_config(config_options(tmp_path, "model_config_list {}")) == []


def test_malformed_config_reports_path_line_and_column(tmp_path):
    o = config_options(tmp_path, "model_config_list {\n  config {\n    nmae: 'x'\n  }\n}\n")
    msg = error_of(sc.load_model_config, o)
    assert f"Invalid protobuf file: '{o.model_config_file}'" in msg
    assert "3:5" in msg and "nmae" in msg and "ModelServerConfig" in msg
    # protobuf's C++ parser text, which TF Serving's tensorflow_model_server_test.py looks for in stderr
    assert ('Error parsing text-format tensorflow.serving.ModelServerConfig: 3:5: Message type '
            '"tensorflow.serving.ModelConfig" has no field named "nmae".') in msg


def test_non_utf8_config_is_malformed(tmp_path):
    path = tmp_path / "bin.config"
    path.write_bytes(b"\xff\xfe\x00")
    assert "Invalid protobuf file" in error_of(sc.load_model_config, parse_args([f"--model_config_file={path}"]))


def test_unreadable_config(tmp_path):
    missing = str(tmp_path / "missing.config")
    msg = error_of(sc.load_model_config, parse_args([f"--model_config_file={missing}"]))
    assert f"Cannot read --model_config_file '{missing}'" in msg and "No such file" in msg
    assert "Cannot read" in error_of(sc.load_model_config, parse_args([f"--model_config_file={tmp_path}"]))


# ------------------------------------------------------------------------------------ batching, monitoring

def test_batching_without_file_is_server_cc_default():
    params = sc.load_batching_parameters("")
    assert params.thread_pool_name.value == "model_server_batch_threads"
    assert not params.HasField("max_batch_size")
    eff = sc.effective_batching(params)
    assert (eff["max_batch_size"], eff["batch_timeout_micros"], eff["max_enqueued_batches"]) == (1000, 0, 10)
    assert eff["num_batch_threads"] == len(os.sched_getaffinity(0))
    assert eff["thread_pool_name"] == "model_server_batch_threads"


def test_batching_file(tmp_path):
    text = ("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
            "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n"
            "allowed_batch_sizes: 32\nallowed_batch_sizes: 128\npad_variable_length_inputs: true\n")
    params = sc.load_batching_parameters(write(tmp_path, "batching.txt", text))
    assert params.max_batch_size.value == 128 and list(params.allowed_batch_sizes) == [32, 128]
    eff = sc.effective_batching(params)
    assert eff["max_enqueued_batches"] == 1_000_000 and eff["num_batch_threads"] == 8
    assert eff["thread_pool_name"] == "batch_threads" and eff["pad_variable_length_inputs"] is True


@pytest.mark.parametrize("text, fragment", [
    ("allowed_batch_sizes: 8", "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 8; "
                               "expected 1000"),
    ("max_batch_size { value: 16 } allowed_batch_sizes: 8", "expected 16"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
    ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
    ("max_batch_size: 5", "Invalid protobuf file"),
])
def test_bad_batching_files(tmp_path, text, fragment):
    path = write(tmp_path, "batching.txt", text)
    msg = error_of(sc.load_batching_parameters, path)
    assert fragment in msg and path in msg


def test_monitoring_config(tmp_path):
    assert not sc.load_monitoring_config("").prometheus_config.enable
    text = 'prometheus_config {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n'
    path = write(tmp_path, "mon.txt", text)
    config = sc.load_monitoring_config(path)
    assert config.prometheus_config.enable and config.prometheus_config.path == sc.DEFAULT_PROMETHEUS_PATH


def test_malformed_monitoring_config(tmp_path):
    path = write(tmp_path, "mon.txt", "prometheus_config { enable: maybe }")
    msg = error_of(sc.load_monitoring_config, path)
    assert path in msg and "1:" in msg and "MonitoringConfig" in msg


def test_schema_matches_tf_serving_field_numbers():
    fields = {f.name: f.number for f in sc.BatchingParameters.DESCRIPTOR.fields}
    assert fields == {"max_batch_size": 1, "batch_timeout_micros": 2, "max_enqueued_batches": 3,
                      "num_batch_threads": 4, "thread_pool_name": 5, "allowed_batch_sizes": 6,
                      "pad_variable_length_inputs": 7, "enable_large_batch_splitting": 8, "max_execution_batch_size": 9}
    assert sc.MonitoringConfig.DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"
