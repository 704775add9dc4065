"""A fake Flyte admin: a real gRPC server on loopback speaking flyteidl's AdminService, recording every call.

It implements what flytekit's FlyteRemote calls to register a workflow (RegisterProject, CreateTask,
CreateWorkflow, CreateLaunchPlan, GetWorkflow, UpdateLaunchPlan) and to run it (GetLaunchPlan, CreateExecution,
GetExecution, GetExecutionData, TerminateExecution). Executions do not run: a test moves them through
their phases (`succeed`, `fail`) with outputs it encodes as flytekit would. An unknown entity answers
NOT_FOUND and a second CreateExecution of a name ALREADY_EXISTS, as flyteadmin does.
Plain gRPC (no TLS), like an in-cluster flyte-binary; point FlyteRemote at it with insecure=True.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from flyteidl.admin import execution_pb2, launch_plan_pb2, project_pb2, task_pb2, workflow_pb2
from flyteidl.core import compiler_pb2, identifier_pb2, literals_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from flyteidl.service import admin_pb2_grpc

Phase = core_execution_pb2.WorkflowExecution.Phase


def _key(ident: Any) -> tuple[str, ...]:
    return tuple(str(getattr(ident, f, "")) for f in ("project", "domain", "name", "version"))


@dataclass
class Call:
    method: str
    request: Any


@dataclass
class FakeFlyteAdmin(admin_pb2_grpc.AdminServiceServicer):
    calls: list[Call] = field(default_factory=list)
    tasks: dict[tuple[str, ...], Any] = field(default_factory=dict)
    workflows: dict[tuple[str, ...], Any] = field(default_factory=dict)
    launch_plans: dict[tuple[str, ...], Any] = field(default_factory=dict)
    executions: dict[tuple[str, ...], Any] = field(default_factory=dict)
    inputs: dict[tuple[str, ...], Any] = field(default_factory=dict)
    outputs: dict[tuple[str, ...], Any] = field(default_factory=dict)
    active: dict[tuple[str, ...], str] = field(default_factory=dict)
    projects: set[str] = field(default_factory=set)
    unavailable: dict[str, int] = field(default_factory=dict)  # method -> how many calls answer UNAVAILABLE  # (project, domain, name) -> version
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what a test reads ---------------------------------------------------------------------------------
    def methods(self) -> list[str]:
        with self.lock:
            return [c.method for c in self.calls]

    def requests(self, method: str) -> list[Any]:
        with self.lock:
            return [c.request for c in self.calls if c.method == method]

    def _record(self, method: str, request: Any) -> None:
        with self.lock:
            self.calls.append(Call(method, request))

    # --- registration --------------------------------------------------------------------------------------
    def RegisterProject(self, request, context):  # noqa: N802
        self._record("RegisterProject", request)
        with self.lock:
            if request.project.id in self.projects:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"project {request.project.id} exists")
            self.projects.add(request.project.id)
        return project_pb2.ProjectRegisterResponse()

    def _create(self, store: dict, method: str, request: Any, context: grpc.ServicerContext) -> None:
        self._record(method, request)
        key = _key(request.id)
        with self.lock:
            if key in store and store[key] != request.spec:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{key} exists with a different structure")
            store[key] = request.spec

    def CreateTask(self, request, context):  # noqa: N802 (the gRPC method names)
        self._create(self.tasks, "CreateTask", request, context)
        return task_pb2.TaskCreateResponse()

    def CreateWorkflow(self, request, context):  # noqa: N802
        self._create(self.workflows, "CreateWorkflow", request, context)
        return workflow_pb2.WorkflowCreateResponse()

    def CreateLaunchPlan(self, request, context):  # noqa: N802
        self._create(self.launch_plans, "CreateLaunchPlan", request, context)
        return launch_plan_pb2.LaunchPlanCreateResponse()

    def UpdateLaunchPlan(self, request, context):  # noqa: N802
        self._record("UpdateLaunchPlan", request)
        key = _key(request.id)
        if key not in self.launch_plans:
            context.abort(grpc.StatusCode.NOT_FOUND, f"launch plan {key}")
        if request.state == launch_plan_pb2.ACTIVE:
            self.active[key[:3]] = key[3]
        elif self.active.get(key[:3]) == key[3]:
            del self.active[key[:3]]
        return launch_plan_pb2.LaunchPlanUpdateResponse()

    def GetActiveLaunchPlan(self, request, context):  # noqa: N802
        self._record("GetActiveLaunchPlan", request)
        name = (request.id.project, request.id.domain, request.id.name)
        if name not in self.active:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no active launch plan {name}")
        ident = identifier_pb2.Identifier(resource_type=identifier_pb2.LAUNCH_PLAN, project=name[0],
                                          domain=name[1], name=name[2], version=self.active[name])
        return self._launch_plan(ident, context)

    def GetWorkflow(self, request, context):  # noqa: N802
        """What flyteadmin answers after compiling: the template and the tasks of its version."""
        self._record("GetWorkflow", request)
        key = _key(request.id)
        spec = self.workflows.get(key)
        if spec is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"workflow {key}")
        tasks = [compiler_pb2.CompiledTask(template=t.template) for k, t in self.tasks.items()
                 if k[0:2] == key[0:2] and k[3] == key[3]]
        compiled = compiler_pb2.CompiledWorkflowClosure(
            primary=compiler_pb2.CompiledWorkflow(template=spec.template), tasks=tasks)
        return workflow_pb2.Workflow(id=request.id, closure=workflow_pb2.WorkflowClosure(compiled_workflow=compiled))

    def GetLaunchPlan(self, request, context):  # noqa: N802
        self._record("GetLaunchPlan", request)
        return self._launch_plan(request.id, context)

    def _launch_plan(self, ident: Any, context: grpc.ServicerContext) -> Any:
        key = _key(ident)
        spec = self.launch_plans.get(key)
        if spec is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"launch plan {key}")
        workflow = self.workflows.get(_key(spec.workflow_id))
        closure = launch_plan_pb2.LaunchPlanClosure(
            expected_inputs=spec.default_inputs,
            expected_outputs=workflow.template.interface.outputs if workflow is not None else None)
        state = launch_plan_pb2.ACTIVE if self.active.get(key[:3]) == key[3] else launch_plan_pb2.INACTIVE
        closure.state = state
        return launch_plan_pb2.LaunchPlan(id=ident, spec=spec, closure=closure)

    # --- executions ----------------------------------------------------------------------------------------
    def CreateExecution(self, request, context):  # noqa: N802
        self._record("CreateExecution", request)
        ident = identifier_pb2.WorkflowExecutionIdentifier(project=request.project, domain=request.domain,
                                                           name=request.name)
        key = _key(ident)
        with self.lock:
            if key in self.executions:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"execution {request.name} exists")
            if _key(request.spec.launch_plan) not in self.launch_plans:
                context.abort(grpc.StatusCode.NOT_FOUND, f"launch plan {_key(request.spec.launch_plan)}")
            self.executions[key] = execution_pb2.Execution(
                id=ident, spec=request.spec, closure=execution_pb2.ExecutionClosure(phase=Phase.RUNNING))
            self.inputs[key] = request.inputs
        return execution_pb2.ExecutionCreateResponse(id=ident)

    def _execution(self, ident: Any, context: grpc.ServicerContext) -> Any:
        found = self.executions.get(_key(ident))
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"execution {ident.name}")
        return found

    def GetExecution(self, request, context):  # noqa: N802
        self._record("GetExecution", request)
        with self.lock:
            if self.unavailable.get("GetExecution", 0) > 0:  # an outage the test asked for
                self.unavailable["GetExecution"] -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "flyteadmin restarting")
            copy = execution_pb2.Execution()
            copy.CopyFrom(self._execution(request.id, context))
            return copy

    def GetExecutionData(self, request, context):  # noqa: N802
        self._record("GetExecutionData", request)
        with self.lock:
            self._execution(request.id, context)
            key = _key(request.id)
            return execution_pb2.WorkflowExecutionGetDataResponse(
                full_inputs=self.inputs.get(key), full_outputs=self.outputs.get(key))

    def TerminateExecution(self, request, context):  # noqa: N802
        self._record("TerminateExecution", request)
        with self.lock:
            found = self._execution(request.id, context)
            if found.closure.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED, Phase.TIMED_OUT):
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"execution {request.id.name} already ended")
            found.closure.phase = Phase.ABORTED
            found.closure.abort_metadata.cause = request.cause
        return execution_pb2.ExecutionTerminateResponse()

    # --- what a test drives --------------------------------------------------------------------------------
    def execution(self, project: str, domain: str, name: str) -> Any:
        with self.lock:
            return self.executions[(project, domain, name, "")]

    def succeed(self, project: str, domain: str, name: str, outputs: literals_pb2.LiteralMap) -> None:
        with self.lock:
            self.outputs[(project, domain, name, "")] = outputs
            self.executions[(project, domain, name, "")].closure.phase = Phase.SUCCEEDED

    def fail(self, project: str, domain: str, name: str, message: str) -> None:
        with self.lock:
            closure = self.executions[(project, domain, name, "")].closure
            closure.error.message = message
            closure.phase = Phase.FAILED


@contextmanager
def running_fake_admin() -> Iterator[tuple[FakeFlyteAdmin, str]]:
    """The fake on a free loopback port: (admin, "127.0.0.1:PORT")."""
    admin = FakeFlyteAdmin()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield admin, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
