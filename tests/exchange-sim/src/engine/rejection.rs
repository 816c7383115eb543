//! Why an order is refused, in the codes of Coinbase's `error_response`.

/// Why an order was refused; rendered into `error_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    InsufficientFund,
    InvalidSizePrecision,
    InvalidPricePrecision,
    InvalidQuoteSizePrecision,
    InvalidProductId,
    UntradableProduct,
    OrderEntryDisabled,
    InvalidLimitPricePostOnly,
    InvalidLeverage,
    BaseSizeTooSmall,
    BaseSizeTooLarge,
    QuoteSizeTooSmall,
    QuoteSizeTooLarge,
    InvalidLimitPrice,
    InvalidStopPrice,
    InvalidEndTime,
    TooManyOpenOrders,
    UnsupportedOrderConfiguration,
    NoOpenPosition,
}

impl RejectReason {
    /// `error_response.error`.
    pub fn error(self) -> &'static str {
        match self {
            RejectReason::InsufficientFund => "INSUFFICIENT_FUND",
            RejectReason::InvalidSizePrecision => "INVALID_SIZE_PRECISION",
            RejectReason::InvalidPricePrecision => "INVALID_PRICE_PRECISION",
            RejectReason::InvalidQuoteSizePrecision => "INVALID_QUOTE_SIZE_PRECISION",
            RejectReason::InvalidProductId => "INVALID_PRODUCT_ID",
            RejectReason::UntradableProduct => "UNTRADABLE_PRODUCT",
            RejectReason::OrderEntryDisabled => "ORDER_ENTRY_DISABLED",
            RejectReason::InvalidLimitPricePostOnly => "INVALID_LIMIT_PRICE_POST_ONLY",
            RejectReason::InvalidLeverage => "INVALID_LEVERAGE",
            RejectReason::BaseSizeTooSmall => "INVALID_BASE_SIZE_TOO_SMALL",
            RejectReason::BaseSizeTooLarge => "INVALID_BASE_SIZE_TOO_LARGE",
            RejectReason::QuoteSizeTooSmall => "INVALID_QUOTE_SIZE_TOO_SMALL",
            RejectReason::QuoteSizeTooLarge => "INVALID_QUOTE_SIZE_TOO_LARGE",
            RejectReason::InvalidLimitPrice => "INVALID_LIMIT_PRICE",
            RejectReason::InvalidStopPrice => "INVALID_STOP_PRICE",
            RejectReason::InvalidEndTime => "INVALID_END_TIME",
            RejectReason::TooManyOpenOrders => "TOO_MANY_OPEN_ORDERS",
            RejectReason::UnsupportedOrderConfiguration => "UNSUPPORTED_ORDER_CONFIGURATION",
            RejectReason::NoOpenPosition => "NO_OPEN_POSITION",
        }
    }

    /// `error_response.new_order_failure_reason` (Coinbase's `NewOrderFailureReason` enum).
    pub fn new_order_failure_reason(self) -> &'static str {
        match self {
            RejectReason::InsufficientFund
            | RejectReason::InvalidSizePrecision
            | RejectReason::InvalidPricePrecision
            | RejectReason::InvalidProductId
            | RejectReason::OrderEntryDisabled
            | RejectReason::InvalidLimitPricePostOnly
            | RejectReason::InvalidLimitPrice
            | RejectReason::UnsupportedOrderConfiguration => self.error(),
            _ => "UNKNOWN_FAILURE_REASON",
        }
    }

    /// `error_response.preview_failure_reason` and the `errs` of a preview.
    pub fn preview_failure_reason(self) -> &'static str {
        match self {
            RejectReason::InsufficientFund => "PREVIEW_INSUFFICIENT_FUND",
            RejectReason::InvalidSizePrecision => "PREVIEW_INVALID_SIZE_PRECISION",
            RejectReason::InvalidPricePrecision => "PREVIEW_INVALID_PRICE_PRECISION",
            RejectReason::InvalidQuoteSizePrecision => "PREVIEW_INVALID_QUOTE_SIZE_PRECISION",
            RejectReason::InvalidProductId => "PREVIEW_INVALID_PRODUCT_ID",
            RejectReason::UntradableProduct => "PREVIEW_UNTRADABLE_PRODUCT",
            RejectReason::OrderEntryDisabled => "PREVIEW_ORDER_ENTRY_DISABLED",
            RejectReason::InvalidLimitPricePostOnly => "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY",
            RejectReason::InvalidLeverage => "PREVIEW_INVALID_LEVERAGE",
            RejectReason::BaseSizeTooSmall => "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL",
            RejectReason::BaseSizeTooLarge => "PREVIEW_INVALID_BASE_SIZE_TOO_LARGE",
            RejectReason::QuoteSizeTooSmall => "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL",
            RejectReason::QuoteSizeTooLarge => "PREVIEW_INVALID_QUOTE_SIZE_TOO_LARGE",
            RejectReason::InvalidLimitPrice => "PREVIEW_INVALID_LIMIT_PRICE",
            RejectReason::InvalidStopPrice => "PREVIEW_INVALID_STOP_PRICE",
            RejectReason::InvalidEndTime => "PREVIEW_INVALID_END_TIME",
            RejectReason::TooManyOpenOrders => "PREVIEW_TOO_MANY_OPEN_ORDERS",
            RejectReason::UnsupportedOrderConfiguration => "PREVIEW_INVALID_ORDER_CONFIG",
            RejectReason::NoOpenPosition => "PREVIEW_NO_OPEN_POSITION",
        }
    }
}

/// A refused order with a human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

pub(super) fn reject<T>(reason: RejectReason, message: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        reason,
        message: message.into(),
    })
}
