//! The closed set of protocol operations an agent performs, and the states an agent can be in.
//! Both are bounded label sets for metrics and report keys; their names are stable report keys.

/// One kind of protocol call, as the recorder times it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Operation {
    ConnectionData,
    PoolLookup,
    AgentLookup,
    Register,
    ReplaceAgent,
    DeleteAgent,
    /// Anonymous call answered with the 401 Bearer challenge.
    AuthChallenge,
    /// Listener token: JWT client assertion → access token.
    TokenExchange,
    SessionCreate,
    SessionDelete,
    /// Long poll answered with a message.
    PollMessage,
    /// Long poll held to its end with nothing to deliver (timed apart: it is not latency).
    PollEmpty,
    KeepAlive,
    MessageAck,
    LockRenew,
    TimelineUpdate,
    FeedPost,
    LogCreate,
    LogAppend,
    AttachmentUpload,
    JobCompleted,
    JobRequestFinish,
    /// Extension: job-token rotation through the refresh grant.
    TokenRotate,
    /// Emulator admin: queue jobs (the fleet's job generator).
    QueueJobs,
}

impl Operation {
    /// Every operation, in report order.
    pub const ALL: &'static [Operation] = &[
        Operation::ConnectionData,
        Operation::PoolLookup,
        Operation::AgentLookup,
        Operation::Register,
        Operation::ReplaceAgent,
        Operation::DeleteAgent,
        Operation::AuthChallenge,
        Operation::TokenExchange,
        Operation::SessionCreate,
        Operation::SessionDelete,
        Operation::PollMessage,
        Operation::PollEmpty,
        Operation::KeepAlive,
        Operation::MessageAck,
        Operation::LockRenew,
        Operation::TimelineUpdate,
        Operation::FeedPost,
        Operation::LogCreate,
        Operation::LogAppend,
        Operation::AttachmentUpload,
        Operation::JobCompleted,
        Operation::JobRequestFinish,
        Operation::TokenRotate,
        Operation::QueueJobs,
    ];

    /// Stable snake_case name used in reports, thresholds and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Operation::ConnectionData => "connection_data",
            Operation::PoolLookup => "pool_lookup",
            Operation::AgentLookup => "agent_lookup",
            Operation::Register => "register",
            Operation::ReplaceAgent => "replace_agent",
            Operation::DeleteAgent => "delete_agent",
            Operation::AuthChallenge => "auth_challenge",
            Operation::TokenExchange => "token_exchange",
            Operation::SessionCreate => "session_create",
            Operation::SessionDelete => "session_delete",
            Operation::PollMessage => "poll_message",
            Operation::PollEmpty => "poll_empty",
            Operation::KeepAlive => "keep_alive",
            Operation::MessageAck => "message_ack",
            Operation::LockRenew => "lock_renew",
            Operation::TimelineUpdate => "timeline_update",
            Operation::FeedPost => "feed_post",
            Operation::LogCreate => "log_create",
            Operation::LogAppend => "log_append",
            Operation::AttachmentUpload => "attachment_upload",
            Operation::JobCompleted => "job_completed",
            Operation::JobRequestFinish => "job_request_finish",
            Operation::TokenRotate => "token_rotate",
            Operation::QueueJobs => "queue_jobs",
        }
    }

    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.iter().copied().find(|o| o.name() == name)
    }
}

/// What an agent is doing, for the "agents by state" gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgentState {
    /// Registering, exchanging tokens or creating a session.
    Registering,
    /// Holding a session and polling, no job.
    Idle,
    /// Running a job.
    Busy,
    /// Backing off after errors, stopped, or not started yet.
    Offline,
}

impl AgentState {
    pub const ALL: &'static [AgentState] = &[
        AgentState::Registering,
        AgentState::Idle,
        AgentState::Busy,
        AgentState::Offline,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AgentState::Registering => "registering",
            AgentState::Idle => "idle",
            AgentState::Busy => "busy",
            AgentState::Offline => "offline",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for &op in Operation::ALL {
            assert_eq!(Operation::from_name(op.name()), Some(op));
        }
        let mut names: Vec<_> = Operation::ALL.iter().map(|o| o.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Operation::ALL.len());
    }
}
