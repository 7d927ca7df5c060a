"""TaskService from Python: resumable WatchTask streams."""

from __future__ import annotations

import grpc
import pytest

from client import watch_task
from stubs import task_pb2, task_pb2_grpc

TERMINAL = {task_pb2.TASK_STATE_SUCCEEDED, task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_CANCELLED}


@pytest.fixture
def tasks(channel) -> task_pb2_grpc.TaskServiceStub:
    return task_pb2_grpc.TaskServiceStub(channel)


def start(tasks, steps: int, delay_ms: int, fail_at: int = 0) -> str:
    spec = task_pb2.DemoTaskSpec(steps=steps, step_delay_ms=delay_ms, fail_at_step=fail_at)
    task = tasks.StartTask(task_pb2.StartTaskRequest(demo=spec), timeout=10).task
    assert task.task_id and task.kind == "demo"
    assert task.state in (task_pb2.TASK_STATE_PENDING, task_pb2.TASK_STATE_RUNNING)
    return task.task_id


def test_a_watcher_that_leaves_and_resumes_after_its_last_sequence_misses_nothing(tasks, idle):
    task_id = start(tasks, steps=8, delay_ms=30)

    first = tasks.WatchTask(task_pb2.WatchTaskRequest(task_id=task_id), timeout=30)
    seen = [next(first).event for _ in range(4)]
    first.cancel()  # the watcher leaves mid-task...
    with pytest.raises(grpc.RpcError) as left:
        list(first)
    assert left.value.code() == grpc.StatusCode.CANCELLED
    assert seen[-1].state not in TERMINAL

    # ...and the task goes on without it; the watcher reconnects after the
    # last sequence it saw and gets the rest, in order, up to the end.
    resumed = list(tasks.WatchTask(task_pb2.WatchTaskRequest(task_id=task_id, after_sequence=seen[-1].sequence), timeout=30))
    events = seen + [r.event for r in resumed]

    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert {e.task_id for e in events} == {task_id}
    assert events[0].state == task_pb2.TASK_STATE_PENDING
    assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    assert sum(e.state in TERMINAL for e in events) == 1
    assert [e.step for e in events] == sorted(e.step for e in events)
    assert events[-1].step == events[-1].total_steps == 8 and events[-1].percent == 100.0
    assert all(e.time.seconds > 0 for e in events)  # google.protobuf.Timestamp decoded

    # A finished task replays its log and ends; after the last sequence, nothing.
    replay = [r.event.sequence for r in tasks.WatchTask(task_pb2.WatchTaskRequest(task_id=task_id), timeout=10)]
    assert replay == [e.sequence for e in events]
    assert list(tasks.WatchTask(task_pb2.WatchTaskRequest(task_id=task_id, after_sequence=events[-1].sequence), timeout=10)) == []
    assert tasks.GetTask(task_pb2.GetTaskRequest(task_id=task_id), timeout=10).task.state == task_pb2.TASK_STATE_SUCCEEDED


def test_the_example_watcher_follows_a_failing_task_to_its_end(channel, tasks):
    task_id = start(tasks, steps=5, delay_ms=10, fail_at=3)
    events = list(watch_task(channel, task_id))
    assert events[-1].state == task_pb2.TASK_STATE_FAILED
    assert events[-1].error
    assert events[-1].step < 5


def test_cancel_task_ends_its_watchers_with_the_cancelled_event(tasks):
    task_id = start(tasks, steps=1000, delay_ms=50)
    watch = tasks.WatchTask(task_pb2.WatchTaskRequest(task_id=task_id), timeout=30)
    next(watch)
    cancelled = tasks.CancelTask(task_pb2.CancelTaskRequest(task_id=task_id), timeout=10).task
    assert cancelled.state == task_pb2.TASK_STATE_CANCELLED
    rest = [r.event for r in watch]
    assert rest[-1].state == task_pb2.TASK_STATE_CANCELLED


def test_an_unknown_task_is_not_found(tasks):
    with pytest.raises(grpc.RpcError) as failed:
        list(tasks.WatchTask(task_pb2.WatchTaskRequest(task_id="task-does-not-exist"), timeout=10))
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
