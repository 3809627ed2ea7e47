//! What to do about an error that stops the binary: how to start a missing service with
//! the project's scripts, or which variable sets its address. The libraries' errors say
//! what failed and why; this advice is the binary's, which knows `deploy/local/` and the
//! environment it reads.

use shopflow_ingest::SourceError;
use shopflow_sinks::SinkError;

/// The advice for the first error in `e`'s chain that has one.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        if let Some(sink) = cause.downcast_ref::<SinkError>() {
            return sink_hint(sink);
        }
        cause.downcast_ref::<SourceError>().and_then(source_hint)
    })
}

fn sink_hint(e: &SinkError) -> Option<String> {
    Some(match e {
        SinkError::Redis { .. } => {
            "is Redis running? deploy/local/up.sh redis starts one; SHOPFLOW_REDIS_URL sets \
             the address"
                .into()
        }
        SinkError::Mysql {
            unreachable: true, ..
        } => "is it running? deploy/local/up.sh mysql starts MariaDB; SHOPFLOW_MYSQL_URL sets \
              the address, user and database"
            .into(),
        SinkError::ClickHouse { .. } => {
            "is ClickHouse running? deploy/local/up.sh clickhouse starts one; \
             SHOPFLOW_CLICKHOUSE_URL sets the address"
                .into()
        }
        SinkError::Kafka { .. } | SinkError::Unacknowledged { .. } => BROKER_HINT.into(),
        _ => return None,
    })
}

fn source_hint(e: &SourceError) -> Option<String> {
    match e {
        SourceError::Kafka { .. } => Some(BROKER_HINT.into()),
        SourceError::NoTopic { topic, .. } => Some(format!(
            "create it, e.g. deploy/local/create-topic.sh {topic} 4"
        )),
        _ => None,
    }
}

const BROKER_HINT: &str = "is the broker running? deploy/local/up.sh kafka starts one; \
                           SHOPFLOW_KAFKA_BROKERS sets the address";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_that_cannot_be_reached_gets_its_script_and_variable() {
        let kafka = SinkError::Unacknowledged {
            brokers: "b:9092".into(),
            waited_s: 15,
        };
        let e = anyhow::Error::new(kafka).context("writing alerts");
        let h = hint(&e).expect("a hint for the broker, through the context");
        assert!(h.contains("deploy/local/up.sh kafka"), "{h}");
        assert!(h.contains("SHOPFLOW_KAFKA_BROKERS"), "{h}");
        let topic = SourceError::NoTopic {
            brokers: "b:9092".into(),
            topic: "shop.orders".into(),
        };
        assert_eq!(
            hint(&anyhow::Error::new(topic)).as_deref(),
            Some("create it, e.g. deploy/local/create-topic.sh shop.orders 4")
        );
        let other = SinkError::Config("bad".into());
        assert_eq!(hint(&anyhow::Error::new(other)), None, "nothing to advise");
    }

    #[test]
    fn the_libraries_messages_carry_no_advice() {
        let e = SinkError::Unacknowledged {
            brokers: "b:9092".into(),
            waited_s: 15,
        };
        let text = e.to_string();
        assert!(!text.contains("SHOPFLOW_"), "{text}");
        assert!(!text.contains("deploy/"), "{text}");
        assert!(hint(&anyhow::Error::new(e)).is_some());
    }
}
