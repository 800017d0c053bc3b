"""The Celery app's configuration: JSON only, routed queues, late acks, bounded tasks, endpoints from the environment."""

import subprocess
import sys

import pytest

from ragopt.config import ConfigError, RagoptConfig
from ragopt.distributed.app import celery_settings, endpoints, make_app, task_bounds
from ragopt.distributed.worker import worker_argv


def test_json_only_routed_queues_late_acks_and_events():
    conf = celery_settings(RagoptConfig(redis_url="redis://10.0.0.5:6379/2"))
    assert (conf["task_serializer"], conf["result_serializer"], conf["event_serializer"]) == ("json",) * 3
    assert conf["accept_content"] == conf["result_accept_content"] == ["json"]
    assert [q.name for q in conf["task_queues"]] == ["parse", "ingest", "query"]
    assert conf["task_routes"] == {"ragopt.parse": {"queue": "parse"}, "ragopt.ingest_batch": {"queue": "ingest"},
                                   "ragopt.query": {"queue": "query"}}
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_send_task_events"] and conf["task_send_sent_event"]
    assert conf["broker_transport_options"]["visibility_timeout"] == 3600


def test_tasks_carry_celerys_limits_and_retry_transient_errors_only():
    from ragopt.backends.parser import CorruptDocumentError, EmptyDocumentError
    from ragopt.distributed.lock import LeaseLost

    app = make_app(RagoptConfig(parse_soft_time_limit_s=30, parse_time_limit_s=60), environ={})
    parse = app.tasks["ragopt.parse"]
    assert (parse.soft_time_limit, parse.time_limit, parse.max_retries) == (30, 60, 3)
    assert parse.retry_backoff and parse.retry_jitter and parse.retry_backoff_max < 3600
    for bad_file in (CorruptDocumentError, EmptyDocumentError):
        assert not issubclass(bad_file, parse.autoretry_for), bad_file
    assert issubclass(LeaseLost, app.tasks["ragopt.ingest_batch"].autoretry_for)
    assert not issubclass(LeaseLost, parse.autoretry_for)


@pytest.mark.parametrize("variables,broker,backend,note", [
    ({"REDIS_URL": "redis://a:1/0"}, "redis://a:1/0", "redis://a:1/0", "REDIS_URI"),
    ({"REDIS_URI": "redis://l:1/0"}, "redis://l:1/0", "redis://l:1/0", "REDIS_URL is unset"),
    ({"CELERY_BROKER_URL": "redis://b:1/0"}, "redis://b:1/0", "redis://b:1/0", "CELERY_RESULT_BACKEND is unset"),
    ({"CELERY_RESULT_BACKEND": "redis://r:1/0"}, "redis://r:1/0", "redis://r:1/0", "CELERY_BROKER_URL is unset"),
    ({"CELERY_BROKER_URL": "redis://b:1/0", "CELERY_RESULT_BACKEND": "redis://r:1/1", "REDIS_URI": "redis://l:1/0"},
     "redis://b:1/0", "redis://r:1/1", None),
])
def test_endpoints_use_one_variable_for_both_when_only_one_is_set_and_say_so(variables, broker, backend, note):
    where = endpoints(RagoptConfig.from_env(variables), environ=variables)
    assert (where.broker, where.backend) == (broker, backend)
    assert any(note in n for n in where.notes) if note else not [n for n in where.notes if "unset" in n]
    assert where.redis_uri == variables.get("REDIS_URL") if "REDIS_URI" not in variables else where.redis_uri is None


def test_a_broker_that_is_not_redis_is_refused():
    with pytest.raises(ConfigError, match="must be Redis"):
        endpoints(RagoptConfig(celery_broker_url="amqp://guest@localhost//"), environ={})


def test_visibility_timeout_must_exceed_every_task_limit():
    config = RagoptConfig(visibility_timeout_s=700)  # below a job batch's 2 x 600 s
    assert max(task_bounds(config).values()) == 1200
    with pytest.raises(ConfigError, match="RAGOPT_VISIBILITY_TIMEOUT=700 s must exceed .*ragopt.ingest_batch's 1200 s"):
        make_app(config, environ={})
    make_app(config.replace(batch_timeout_s=300), environ={})  # 2 x 300 s < 700 s


def test_the_worker_command_refuses_a_visibility_timeout_below_a_limit_at_start_up():
    env = {"RAGOPT_VISIBILITY_TIMEOUT": "100", "RAGOPT_PARSE_TIME_LIMIT": "200", "RAGOPT_PARSE_SOFT_TIME_LIMIT": "150",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "ragopt.cli", "worker", "--queues", "parse"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "RAGOPT_VISIBILITY_TIMEOUT=100 s must exceed" in done.stderr


def test_an_ingest_worker_refuses_a_factory_it_cannot_import_at_start_up():
    env = {"RAGOPT_RAG_FACTORY": "nowhere.at_all:factory", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "ragopt.cli", "worker", "--queues", "ingest"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "RAGOPT_RAG_FACTORY='nowhere.at_all:factory' cannot be imported" in done.stderr


def test_each_queue_gets_its_pool():
    config = RagoptConfig(worker_pool_size=3)
    parse = worker_argv(["parse"], config)
    assert parse[parse.index("--pool") + 1] == "prefork" and parse[parse.index("--concurrency") + 1] == "3"
    ingest = worker_argv(["ingest"], config)
    assert ingest[ingest.index("--pool") + 1] == "threads" and ingest[ingest.index("--queues") + 1] == "ingest,query"
    with pytest.raises(ConfigError, match="separate workers"):
        worker_argv(["parse", "ingest"], config)
    with pytest.raises(ConfigError, match="--queues"):
        worker_argv(["documents"], config)
