//! The Gateway API commands, run through `business::Api` (a remote one: it asks the register
//! for the gateways, as PHP's GatewayClient does).

use crate::command::{Command, Object, MAX_LIST};
use crate::fail::Fail;
use business::session::{from_json, to_json};
use business::{php, Api};
use serde_json::Value;

/// `items` as the Api takes them, if there are `min` to `MAX_LIST`.
fn list<'a, T: std::ops::Deref<Target = str>>(what: &str, items: &'a [T], min: usize) -> Result<Vec<&'a str>, Fail> {
    if items.len() < min || items.len() > MAX_LIST {
        return Err(Fail::bad(format!("{min} to {MAX_LIST} {what} per command")));
    }
    Ok(items.iter().map(|i| &**i).collect())
}

fn session(o: &Object) -> php::Array {
    match from_json(&Value::Object(o.clone())) {
        php::Value::Array(a) => a,
        _ => php::Array::default(),
    }
}

fn ids(list: Vec<business::ClientId>) -> Value {
    list.into_iter().map(|c| c.to_string()).collect::<Vec<_>>().into()
}

/// Whether `client_id` names a connection on a gateway the register lists. A client_id
/// carries its gateway's address; without this check, anyone holding a key could make the API
/// connect to any address and port they write into one.
async fn on_known_gateway(api: &Api, client_id: &str) -> Result<bool, Fail> {
    let id: business::ClientId = client_id.parse().map_err(|e| Fail::bad(format!("{e}")))?;
    Ok(api.gateways().await?.contains(&id.gateway()))
}

/// Runs one Gateway API command; its answer as JSON (`null` for those that only act). A
/// client on no known gateway is offline to the reads and "no such client" to the writes.
pub async fn run(api: &Api, cmd: Command) -> Result<Value, Fail> {
    use Command::*;
    if let Some(client) = cmd.client_id() {
        if !on_known_gateway(api, client).await? {
            return match cmd {
                IsOnline { .. } => Ok(false.into()),
                GetUidByClientId { .. } | GetSession { .. } => Ok(Value::Null),
                _ => Err(Fail::not_found("no such client: its gateway is not one the register knows")),
            };
        }
    }
    let done = Value::Null;
    Ok(match cmd {
        SendToAll { message, exclude } => {
            let exclude = list("client ids", &exclude, 0)?;
            if exclude.is_empty() {
                api.send_to_all(message).await?
            } else {
                api.send_to_all_except(&exclude, message).await?
            }
            done
        }
        SendToClient { client_id, message } => {
            api.send_to_client(&client_id, message).await?;
            done
        }
        SendToUid { uids, message } => {
            api.send_to_uid(&list("uids", &uids, 1)?, message).await?;
            done
        }
        SendToGroup { groups, message, exclude } => {
            api.send_to_group(&list("groups", &groups, 1)?, message, &list("client ids", &exclude, 0)?).await?;
            done
        }
        CloseClient { client_id, message } => {
            api.close_client(&client_id, message.map(bytes::Bytes::from)).await?;
            done
        }
        IsOnline { client_id } => api.is_online(&client_id).await?.into(),
        BindUid { client_id, uid } => {
            api.bind_uid(&client_id, &uid).await?;
            done
        }
        UnbindUid { client_id, uid } => {
            api.unbind_uid(&client_id, &uid).await?;
            done
        }
        JoinGroup { client_id, group } => {
            api.join_group(&client_id, &group).await?;
            done
        }
        LeaveGroup { client_id, group } => {
            api.leave_group(&client_id, &group).await?;
            done
        }
        Ungroup { group } => {
            api.ungroup(&group).await?;
            done
        }
        GetUidByClientId { client_id } => api.get_uid_by_client_id(&client_id).await?.into(),
        GetClientIdByUid { uid } => ids(api.get_client_id_by_uid(&uid).await?),
        IsUidOnline { uid } => api.is_uid_online(&uid).await?.into(),
        GetClientCountByGroup { group } => api.get_client_count_by_group(&group).await?.into(),
        GetClientIdListByGroup { group } => ids(api.get_client_id_list_by_group(&group).await?),
        GetUidListByGroup { group } => api.get_uid_list_by_group(&group).await?.into(),
        GetUidCountByGroup { group } => api.get_uid_count_by_group(&group).await?.into(),
        GetAllClientCount {} => api.get_all_client_count().await?.into(),
        GetAllUidCount {} => api.get_all_uid_count().await?.into(),
        GetAllGroupIdList {} => api.get_all_group_id_list().await?.into(),
        GetSession { client_id } => api.get_session(&client_id).await?.map_or(Value::Null, |s| to_json(&php::Value::Array(s))),
        SetSession { client_id, session: s } => {
            api.set_session(&client_id, &session(&s)).await?;
            done
        }
        UpdateSession { client_id, session: s } => {
            api.update_session(&client_id, &session(&s)).await?;
            done
        }
        other => return Err(Fail::bad(format!("{} is not a Gateway API command", other.method()))),
    })
}
