//! cqrs-demo's bank account as the peer runs it: its commands, events, aggregate and view.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope, View};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub enum BankAccountCommand {
    OpenAccount { account_id: String },
    DepositMoney { amount: f64 },
    WithdrawMoney { amount: f64, atm_id: String },
    WriteCheck { check_number: String, amount: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankAccountEvent {
    AccountOpened {
        account_id: String,
    },
    CustomerDepositedMoney {
        amount: f64,
        balance: f64,
    },
    CustomerWithdrewCash {
        amount: f64,
        balance: f64,
    },
    CustomerWroteCheck {
        check_number: String,
        amount: f64,
        balance: f64,
    },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AccountOpened { .. } => "AccountOpened",
            Self::CustomerDepositedMoney { .. } => "CustomerDepositedMoney",
            Self::CustomerWithdrewCash { .. } => "CustomerWithdrewCash",
            Self::CustomerWroteCheck { .. } => "CustomerWroteCheck",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// A refused command (the demo's error is a message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

/// The ATM and cheque checks a withdrawal or cheque consults; always yes, as in the demo.
pub struct HappyPathServices;

impl HappyPathServices {
    async fn atm_withdrawal(&self, _atm_id: &str, _amount: f64) -> Result<(), Refused> {
        Ok(())
    }

    async fn validate_check(&self, _account_id: &str, _check: &str) -> Result<(), Refused> {
        Ok(())
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BankAccount {
    account_id: String,
    balance: f64,
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = Refused;
    type Services = HappyPathServices;

    async fn handle(
        &mut self,
        command: BankAccountCommand,
        services: &HappyPathServices,
        sink: &EventSink<Self>,
    ) -> Result<(), Refused> {
        let event = match command {
            BankAccountCommand::OpenAccount { account_id } => {
                BankAccountEvent::AccountOpened { account_id }
            }
            BankAccountCommand::DepositMoney { amount } => {
                BankAccountEvent::CustomerDepositedMoney {
                    amount,
                    balance: self.balance + amount,
                }
            }
            BankAccountCommand::WithdrawMoney { amount, atm_id } => {
                let balance = self.funds_after(amount)?;
                services.atm_withdrawal(&atm_id, amount).await?;
                BankAccountEvent::CustomerWithdrewCash { amount, balance }
            }
            BankAccountCommand::WriteCheck {
                check_number,
                amount,
            } => {
                let balance = self.funds_after(amount)?;
                services
                    .validate_check(&self.account_id, &check_number)
                    .await?;
                BankAccountEvent::CustomerWroteCheck {
                    check_number,
                    amount,
                    balance,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: BankAccountEvent) {
        match event {
            BankAccountEvent::AccountOpened { account_id } => self.account_id = account_id,
            BankAccountEvent::CustomerDepositedMoney { balance, .. }
            | BankAccountEvent::CustomerWithdrewCash { balance, .. }
            | BankAccountEvent::CustomerWroteCheck { balance, .. } => self.balance = balance,
        }
    }
}

impl BankAccount {
    fn funds_after(&self, amount: f64) -> Result<f64, Refused> {
        let balance = self.balance - amount;
        if balance < 0.0 {
            return Err(Refused("funds not available".into()));
        }
        Ok(balance)
    }
}

/// The account as `GET /account/{id}` shows it, kept by the query in the command's request.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BankAccountView {
    pub account_id: Option<String>,
    pub balance: f64,
    pub written_checks: Vec<String>,
    pub ledger: Vec<LedgerEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub description: String,
    pub amount: f64,
}

impl View<BankAccount> for BankAccountView {
    fn update(&mut self, event: &EventEnvelope<BankAccount>) {
        let entry = |description: &str, amount: f64| LedgerEntry {
            description: description.to_owned(),
            amount,
        };
        match &event.payload {
            BankAccountEvent::AccountOpened { account_id } => {
                self.account_id = Some(account_id.clone());
            }
            BankAccountEvent::CustomerDepositedMoney { amount, balance } => {
                self.ledger.push(entry("deposit", *amount));
                self.balance = *balance;
            }
            BankAccountEvent::CustomerWithdrewCash { amount, balance } => {
                self.ledger.push(entry("atm withdrawal", *amount));
                self.balance = *balance;
            }
            BankAccountEvent::CustomerWroteCheck {
                check_number,
                amount,
                balance,
            } => {
                self.ledger.push(entry(check_number, *amount));
                self.written_checks.push(check_number.clone());
                self.balance = *balance;
            }
        }
    }
}
