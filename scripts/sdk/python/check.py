"""Microsoft's Python task-agent client (azure-devops, azure.devops.v7_1.task_agent) against a
running `fleetsim serve`: every agent and pool call the client offers, each result asserted.

Reads FLEETSIM_SDK_URL (the emulator's base URL) and FLEETSIM_SDK_PAT (a PAT with every scope)
from the environment, never from the command line, so the PAT stays out of process listings and
logs. Talks to 127.0.0.1 only; run by scripts/sdk/check.sh, which starts the emulator. Exits 1
with the failed check's message on the first failure.
"""

import os
import sys
import traceback

from azure.devops.connection import Connection
from azure.devops.exceptions import AzureDevOpsServiceError
from azure.devops.v7_1.task_agent.models import TaskAgent, TaskAgentPool
from msrest.authentication import BasicAuthentication


def step(label, fn):
    """Run one SDK call with its assertions; stop the script with the label on failure."""
    try:
        out = fn()
    except Exception:  # noqa: BLE001 - any failure of the call or its checks fails the step
        print(f"python sdk: FAIL {label}:\n{traceback.format_exc()}", file=sys.stderr)
        sys.exit(1)
    print(f"python sdk: ok   {label}")
    return out


def expect_error(label, type_key, fn):
    """The call must fail with the WrappedException type the real service sends."""

    def check():
        try:
            fn()
        except AzureDevOpsServiceError as err:
            assert err.type_key == type_key, f"expected {type_key}, got {err.type_key}: {err}"
            return
        raise AssertionError(f"expected {type_key}, the call succeeded")

    step(label, check)


def main():
    url = os.environ.get("FLEETSIM_SDK_URL")
    pat = os.environ.get("FLEETSIM_SDK_PAT")
    if not url or not pat:
        print("python sdk check: set FLEETSIM_SDK_URL and FLEETSIM_SDK_PAT", file=sys.stderr)
        sys.exit(2)
    connection = Connection(base_url=url, creds=BasicAuthentication("", pat))
    api = step("get_task_agent_client", lambda: connection.clients_v7_1.get_task_agent_client())
    suffix = f"py-{os.getpid()}"

    # Pools.
    def list_pools():
        pools = api.get_agent_pools()
        assert any(p.id == 1 and p.name == "Default" for p in pools), pools

    step("get_agent_pools", list_pools)
    pool = step(
        "add_agent_pool",
        lambda: api.add_agent_pool(TaskAgentPool(name=f"pool-{suffix}", pool_type="automation")),
    )
    assert pool.id > 1, pool

    def get_pool():
        assert api.get_agent_pool(pool.id).name == f"pool-{suffix}"

    step("get_agent_pool", get_pool)

    def pools_by_name():
        got = api.get_agent_pools(pool_name=f"POOL-{suffix}", action_filter="manage")
        assert [p.id for p in got] == [pool.id], got

    step("get_agent_pools(pool_name, action_filter)", pools_by_name)

    def pools_by_type():
        assert api.get_agent_pools(pool_type="deployment") == []

    step("get_agent_pools(pool_type=deployment)", pools_by_type)

    def pools_by_ids():
        got = api.get_agent_pools_by_ids([1, pool.id])
        assert sorted(p.id for p in got) == [1, pool.id], got

    step("get_agent_pools_by_ids", pools_by_ids)

    def rename_pool():
        got = api.update_agent_pool(TaskAgentPool(name=f"renamed-{suffix}"), pool.id)
        assert got.name == f"renamed-{suffix}", got

    step("update_agent_pool", rename_pool)

    # Agents.
    body = TaskAgent(
        name=f"agent-{suffix}",
        version="4.248.0",
        system_capabilities={"Agent.OS": "Linux", "docker": "1"},
    )
    agent = step("add_agent", lambda: api.add_agent(body, pool.id))
    assert agent.id > 0 and agent.enabled is True, agent

    def by_name():
        got = api.get_agents(pool.id, agent_name=f"agent-{suffix}")
        assert [a.id for a in got] == [agent.id], got
        assert not got[0].system_capabilities, "capabilities only when asked"

    step("get_agents(agent_name)", by_name)

    def with_options():
        got = api.get_agents(
            pool.id,
            include_capabilities=True,
            include_assigned_request=True,
            include_last_completed_request=True,
            property_filters=["x"],
            demands=["docker"],
        )
        assert len(got) == 1 and got[0].system_capabilities["docker"] == "1", got
        assert api.get_agents(pool.id, demands=["java"]) == []

    step("get_agents(include_*, demands)", with_options)

    def get_one():
        got = api.get_agent(pool.id, agent.id, include_capabilities=True,
                            include_assigned_request=True, include_last_completed_request=True,
                            property_filters=["x"])
        assert got.system_capabilities["Agent.OS"] == "Linux", got
        assert got.assigned_request is None, "no job assigned"

    step("get_agent(include_*)", get_one)

    def disable():
        got = api.update_agent(TaskAgent(id=agent.id, enabled=False), pool.id, agent.id)
        assert got.enabled is False, got
        assert api.get_agent(pool.id, agent.id).enabled is False

    step("update_agent(enabled=False)", disable)

    def enable():
        assert api.update_agent(TaskAgent(enabled=True), pool.id, agent.id).enabled is True

    step("update_agent(enabled=True)", enable)

    def replace():
        got = api.replace_agent(
            TaskAgent(id=agent.id, name=f"replaced-{suffix}", version="4.249.0"), pool.id, agent.id
        )
        assert got.id == agent.id and got.name == f"replaced-{suffix}", got

    step("replace_agent", replace)
    step("delete_agent", lambda: api.delete_agent(pool.id, agent.id))
    expect_error(
        "get_agent(deleted) is TaskAgentNotFoundException",
        "TaskAgentNotFoundException",
        lambda: api.get_agent(pool.id, agent.id),
    )
    expect_error(
        "update_agent(deleted) is TaskAgentNotFoundException",
        "TaskAgentNotFoundException",
        lambda: api.update_agent(TaskAgent(enabled=False), pool.id, agent.id),
    )
    step("delete_agent_pool", lambda: api.delete_agent_pool(pool.id))
    expect_error(
        "get_agent_pool(deleted) is TaskAgentPoolNotFoundException",
        "TaskAgentPoolNotFoundException",
        lambda: api.get_agent_pool(pool.id),
    )
    print("python sdk: every agent and pool call passed")


if __name__ == "__main__":
    main()
