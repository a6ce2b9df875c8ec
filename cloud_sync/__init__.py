"""Message contract, durable outbox and MQTT relay shared by the node and the central receiver."""
