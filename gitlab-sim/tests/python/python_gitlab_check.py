"""Drives the GitLab simulator with python-gitlab, the widely used GitLab client.

Usage: python python_gitlab_check.py BASE_URL TOKEN PROJECT_PATH GROUP_PATH EXPECTED_JOBS [FINISHED]

FINISHED: how many finished (success or failed) jobs the project GROUP_PATH/other has.

Exits non-zero (with an assertion message) if the simulator answers anything python-gitlab
does not understand, or answers it wrongly.
"""
import sys

import gitlab

url, token, project_path, group_path, expected_jobs = sys.argv[1:6]
expected_jobs = int(expected_jobs)
expected_finished = int(sys.argv[6]) if len(sys.argv) > 6 else None

gl = gitlab.Gitlab(url, private_token=token)
gl.auth()
assert gl.user.username == "root", gl.user

# A wrong token is refused the way GitLab refuses it.
try:
    gitlab.Gitlab(url, private_token="wrong").auth()
    raise AssertionError("a wrong token was accepted")
except gitlab.exceptions.GitlabAuthenticationError as e:
    assert e.response_code == 401, e

project = gl.projects.get(project_path)
assert project.path_with_namespace == project_path

# Paging: python-gitlab follows the Link headers page by page.
pages = project.jobs.list(scope=["pending", "running"], per_page=2, iterator=True)
ids = [job.id for job in pages]
assert len(ids) == expected_jobs, (len(ids), expected_jobs)
assert len(set(ids)) == len(ids), "a job was listed twice while paging"
assert pages.total == expected_jobs, pages.total
assert pages.total_pages == (expected_jobs + 1) // 2, pages.total_pages
first = project.jobs.list(scope=["pending", "running"], per_page=2, page=1)
assert len(first) == 2
for job in first:
    assert job.status in ("pending", "running"), job.status
    assert isinstance(job.tag_list, list)
everything = project.jobs.list(get_all=True, per_page=3)
assert len(everything) >= expected_jobs

# Groups, with projects of subgroups.
group = gl.groups.get(group_path)
in_group = group.projects.list(include_subgroups=True, get_all=True)
assert project_path in [p.path_with_namespace for p in in_group], in_group

# Runners on the new token workflow: create, read, pause, list jobs, assign, delete.
created = gl.user.runners.create(
    {
        "runner_type": "project_type",
        "project_id": project.id,
        "description": "stack demo / instance demo-0001",
        "tag_list": ["docker", "linux"],
        "run_untagged": False,
        "locked": True,
        "maximum_timeout": 3600,
    }
)
assert created.token.startswith("glrt-"), "runner token lacks the glrt- prefix"
runner = gl.runners.get(created.id)
assert runner.description == "stack demo / instance demo-0001"
assert sorted(runner.tag_list) == ["docker", "linux"]
assert runner.run_untagged is False and runner.locked is True
assert runner.maximum_timeout == 3600
runner.paused = True
runner.save()
assert gl.runners.get(created.id).paused is True
running = gl.runners.get(created.id).jobs.list(status="running", get_all=True)
assert running == [], running
other = gl.projects.get(group_path + "/other")
other.runners.create({"runner_id": created.id})
assert created.id in [r.id for r in other.runners.list(get_all=True)]
gl.runners.delete(created.id)
try:
    gl.runners.get(created.id)
    raise AssertionError("a deleted runner is still there")
except gitlab.exceptions.GitlabGetError as e:
    assert e.response_code == 404, e

# The finished-job history: every documented time field present and consistent.
if expected_finished is not None:
    from datetime import datetime

    def when(s):
        return datetime.fromisoformat(s.replace("Z", "+00:00"))

    other = gl.projects.get(group_path + "/other")
    done = other.jobs.list(scope=["success", "failed"], per_page=2, get_all=True)
    assert len(done) == expected_finished, (len(done), expected_finished)
    ids = [j.id for j in done]
    assert ids == sorted(ids, reverse=True), "finished jobs are not listed newest first"
    for j in done:
        assert j.status in ("success", "failed"), j.status
        created, started, finished = when(j.created_at), when(j.started_at), when(j.finished_at)
        assert created <= started <= finished, (j.created_at, j.started_at, j.finished_at)
        assert abs((started - created).total_seconds() - j.queued_duration) < 0.01, j.queued_duration
        assert abs((finished - started).total_seconds() - j.duration) < 0.01, j.duration
        assert isinstance(j.pipeline["id"], int), j.pipeline
    assert other.jobs.list(scope=["pending", "running"], get_all=True) == []

print("python-gitlab: all checks passed")
