//! Every operation of the API as one typed command, named by `method` as GatewayClient names
//! them (`send_to_uid`, …) or as the chat does: `/api/call` takes one, `/api/batch` many, and
//! the chat's REST routes build one. So each operation is decoded, scope-checked and run in
//! one place, whichever way it came.

use crate::fail::Fail;
use crate::text::{ClientIdText, Content, DisplayName, Filter, Id, Limit, MessageId, Name};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A JSON object (a GatewayWorker session).
pub type Object = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    // The Gateway API (GatewayClient's semantics, on every gateway the register knows). Needs
    // a key for every bot: these uids and groups are not scoped by bot.
    /// Send `message` to every client, but those in `exclude`.
    SendToAll {
        message: String,
        #[serde(default)]
        #[schema(max_items = 1000)]
        exclude: Vec<ClientIdText>,
    },
    SendToClient {
        client_id: ClientIdText,
        message: String,
    },
    SendToUid {
        #[schema(min_items = 1, max_items = 1000)]
        uids: Vec<Name>,
        message: String,
    },
    SendToGroup {
        #[schema(min_items = 1, max_items = 1000)]
        groups: Vec<Name>,
        message: String,
        #[serde(default)]
        #[schema(max_items = 1000)]
        exclude: Vec<ClientIdText>,
    },
    /// Close a client, sending `message` first when given.
    CloseClient {
        client_id: ClientIdText,
        #[serde(default)]
        message: Option<String>,
    },
    IsOnline {
        client_id: ClientIdText,
    },
    BindUid {
        client_id: ClientIdText,
        uid: Name,
    },
    UnbindUid {
        client_id: ClientIdText,
        uid: Name,
    },
    JoinGroup {
        client_id: ClientIdText,
        group: Name,
    },
    LeaveGroup {
        client_id: ClientIdText,
        group: Name,
    },
    Ungroup {
        group: Name,
    },
    GetUidByClientId {
        client_id: ClientIdText,
    },
    GetClientIdByUid {
        uid: Name,
    },
    IsUidOnline {
        uid: Name,
    },
    GetClientCountByGroup {
        group: Name,
    },
    GetClientIdListByGroup {
        group: Name,
    },
    GetUidListByGroup {
        group: Name,
    },
    GetUidCountByGroup {
        group: Name,
    },
    GetAllClientCount {},
    GetAllUidCount {},
    GetAllGroupIdList {},
    GetSession {
        client_id: ClientIdText,
    },
    /// Replace a client's session.
    SetSession {
        client_id: ClientIdText,
        #[schema(value_type = Object)]
        session: Object,
    },
    /// Merge into a client's session (PHP's array_replace_recursive).
    UpdateSession {
        client_id: ClientIdText,
        #[schema(value_type = Object)]
        session: Object,
    },

    // The chat, scoped by bot.
    /// A page of bot `bid`'s open conversations, oldest first, after conversation `after`.
    ListConversations {
        bid: Id,
        #[serde(default)]
        after: Option<Id>,
        #[serde(default)]
        limit: Option<Limit>,
        /// Only those assigned to this agent (`""`: only unassigned ones).
        #[serde(default)]
        assigned: Option<Filter>,
        /// Only `web` or only `line` conversations.
        #[serde(default)]
        channel: Option<Channel>,
    },
    /// A page of a conversation's messages: the newest `limit`, or those before `before_id`
    /// or after `after_id`, oldest first.
    History {
        bid: Id,
        conversation_id: Id,
        #[serde(default)]
        before_id: Option<MessageId>,
        #[serde(default)]
        after_id: Option<MessageId>,
        #[serde(default)]
        limit: Option<Limit>,
    },
    /// Post a message into a conversation as agent `agent`, or as the bot itself when no
    /// agent is named. Stored before it is delivered; a repeated `cid` returns the original
    /// and delivers nothing again. To a LINE user it is sent through the outgoing queue, as an
    /// agent's reply is.
    PostMessage {
        bid: Id,
        conversation_id: Id,
        #[serde(default)]
        agent: Option<Id>,
        /// The sender's display name (default: the agent's, or `[api] bot_name`).
        #[serde(default)]
        name: Option<DisplayName>,
        content: Content,
        #[serde(default)]
        cid: Option<Id>,
    },
    /// Post a message into a room of the bot, as `post_message` does into a conversation.
    PostToRoom {
        bid: Id,
        room: Id,
        #[serde(default)]
        agent: Option<Id>,
        #[serde(default)]
        name: Option<DisplayName>,
        content: Content,
        #[serde(default)]
        cid: Option<Id>,
    },
    /// Assign a conversation to agent `agent` (a transfer when it is held): only if it is held
    /// by `expected` when that is given, else whoever holds it.
    Assign {
        bid: Id,
        conversation_id: Id,
        agent: Id,
        #[serde(default)]
        expected: Option<Id>,
    },
    CloseConversation {
        bid: Id,
        conversation_id: Id,
    },
    /// The agents of bot `bid` online now.
    AgentsOnline {
        bid: Id,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Web,
    Line,
}

/// Most uids, groups or client ids one command names: a bound on what one request makes the
/// gateways do (the schema's `max_items`).
pub const MAX_LIST: usize = 1000;

impl Command {
    /// Whether the command's lists hold as many items as its schema allows. `/api/batch` checks
    /// every command with it before running any, so a batch that does not match the schema is
    /// refused whole (400), as any request that does not match it is.
    pub fn lists_fit(&self) -> Result<(), Fail> {
        use Command::*;
        let fits = |what: &str, len: usize, min: usize| {
            if len < min || len > MAX_LIST {
                Err(Fail::bad(format!("{min} to {MAX_LIST} {what} per command")))
            } else {
                Ok(())
            }
        };
        match self {
            SendToAll { exclude, .. } => fits("client ids", exclude.len(), 0),
            SendToUid { uids, .. } => fits("uids", uids.len(), 1),
            SendToGroup { groups, exclude, .. } => fits("groups", groups.len(), 1).and(fits("client ids", exclude.len(), 0)),
            _ => Ok(()),
        }
    }

    /// What the command needs: the bot it acts on (`None`: the raw Gateway API) and whether
    /// it writes.
    pub fn needs(&self) -> (Option<&str>, bool) {
        use Command::*;
        match self {
            SendToAll { .. }
            | SendToClient { .. }
            | SendToUid { .. }
            | SendToGroup { .. }
            | CloseClient { .. }
            | BindUid { .. }
            | UnbindUid { .. }
            | JoinGroup { .. }
            | LeaveGroup { .. }
            | Ungroup { .. }
            | SetSession { .. }
            | UpdateSession { .. } => (None, true),
            IsOnline { .. }
            | GetUidByClientId { .. }
            | GetClientIdByUid { .. }
            | IsUidOnline { .. }
            | GetClientCountByGroup { .. }
            | GetClientIdListByGroup { .. }
            | GetUidListByGroup { .. }
            | GetUidCountByGroup { .. }
            | GetAllClientCount {}
            | GetAllUidCount {}
            | GetAllGroupIdList {}
            | GetSession { .. } => (None, false),
            ListConversations { bid, .. } | History { bid, .. } | AgentsOnline { bid } => (Some(&**bid), false),
            PostMessage { bid, .. } | PostToRoom { bid, .. } | Assign { bid, .. } | CloseConversation { bid, .. } => (Some(&**bid), true),
        }
    }

    /// The one client a command acts on, if it names one.
    pub fn client_id(&self) -> Option<&str> {
        use Command::*;
        match self {
            SendToClient { client_id, .. }
            | CloseClient { client_id, .. }
            | IsOnline { client_id }
            | BindUid { client_id, .. }
            | UnbindUid { client_id, .. }
            | JoinGroup { client_id, .. }
            | LeaveGroup { client_id, .. }
            | GetUidByClientId { client_id }
            | GetSession { client_id }
            | SetSession { client_id, .. }
            | UpdateSession { client_id, .. } => Some(client_id),
            _ => None,
        }
    }

    /// The method name (serde's tag), for logs and refusals: named here rather than found by
    /// serializing the command, which would copy a message of up to `max_body` per call.
    pub fn method(&self) -> &'static str {
        use Command::*;
        match self {
            SendToAll { .. } => "send_to_all",
            SendToClient { .. } => "send_to_client",
            SendToUid { .. } => "send_to_uid",
            SendToGroup { .. } => "send_to_group",
            CloseClient { .. } => "close_client",
            IsOnline { .. } => "is_online",
            BindUid { .. } => "bind_uid",
            UnbindUid { .. } => "unbind_uid",
            JoinGroup { .. } => "join_group",
            LeaveGroup { .. } => "leave_group",
            Ungroup { .. } => "ungroup",
            GetUidByClientId { .. } => "get_uid_by_client_id",
            GetClientIdByUid { .. } => "get_client_id_by_uid",
            IsUidOnline { .. } => "is_uid_online",
            GetClientCountByGroup { .. } => "get_client_count_by_group",
            GetClientIdListByGroup { .. } => "get_client_id_list_by_group",
            GetUidListByGroup { .. } => "get_uid_list_by_group",
            GetUidCountByGroup { .. } => "get_uid_count_by_group",
            GetAllClientCount { .. } => "get_all_client_count",
            GetAllUidCount { .. } => "get_all_uid_count",
            GetAllGroupIdList { .. } => "get_all_group_id_list",
            GetSession { .. } => "get_session",
            SetSession { .. } => "set_session",
            UpdateSession { .. } => "update_session",
            ListConversations { .. } => "list_conversations",
            History { .. } => "history",
            PostMessage { .. } => "post_message",
            PostToRoom { .. } => "post_to_room",
            Assign { .. } => "assign",
            CloseConversation { .. } => "close_conversation",
            AgentsOnline { .. } => "agents_online",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_s_method_is_its_serde_tag() {
        let every: Vec<Command> = serde_json::from_value(serde_json::json!([
            {"method": "send_to_all", "message": "x"},
            {"method": "send_to_uid", "uids": ["u"], "message": "x"},
            {"method": "get_client_id_list_by_group", "group": "g"},
            {"method": "get_all_uid_count"},
            {"method": "update_session", "client_id": "7f0000010d0a00000001", "session": {}},
            {"method": "list_conversations", "bid": "1"},
            {"method": "post_to_room", "bid": "1", "room": "r", "content": "x"},
            {"method": "agents_online", "bid": "1"},
        ]))
        .expect("commands");
        for c in every {
            assert_eq!(serde_json::to_value(&c).expect("json")["method"], c.method());
        }
    }
}
