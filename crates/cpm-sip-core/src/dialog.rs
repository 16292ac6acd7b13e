//! Dialogs (RFC 3261 section 12), for the user-agent sides of the B2BUA functions: the state
//! a 2xx (or 1xx with a To tag) to a dialog-creating request sets up, and how requests inside
//! the dialog are built.

use cpm_sip::{CSeq, Header, HeaderName, Method, NameAddr, Request, Response, Uri};

/// A dialog's identity: Call-ID, local tag and remote tag (RFC 3261 section 12).
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

/// Whether the dialog has only a provisional response so far.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum DialogState {
    /// Created by a 1xx with a To tag (RFC 3261 section 12.1).
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// Why a dialog could not be created from a message.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// The response does not create a dialog (100, or a failure, or no To tag).
    #[error("the response does not create a dialog")]
    NoDialog,
    /// A header needed for the dialog state is missing or malformed.
    #[error("missing or malformed {0}")]
    BadHeader(&'static str),
}

/// The dialog state of one side (RFC 3261 section 12.1.1 for a UAS, 12.1.2 for a UAC).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Dialog {
    /// Call-ID and tags.
    pub id: DialogId,
    /// Early or confirmed.
    pub state: DialogState,
    /// Our URI (From of our requests).
    pub local_uri: NameAddr,
    /// The peer's URI (To of our requests).
    pub remote_uri: NameAddr,
    /// Where in-dialog requests go: the peer's Contact.
    pub remote_target: Uri,
    /// The route set, in the order our requests carry it.
    pub route_set: Vec<NameAddr>,
    /// Our last CSeq number in this dialog.
    pub local_seq: u32,
    /// The peer's last CSeq number, if it sent a request yet.
    pub remote_seq: Option<u32>,
}

fn first_contact_uri(headers: &cpm_sip::Headers) -> Result<Uri, DialogError> {
    match headers.contact() {
        Ok(Some(cpm_sip::Contact::Addresses(list))) => list
            .into_iter()
            .next()
            .map(|a| a.uri)
            .ok_or(DialogError::BadHeader("Contact")),
        _ => Err(DialogError::BadHeader("Contact")),
    }
}

/// A header the dialog state cannot do without.
fn need<T>(
    v: Result<Option<T>, cpm_sip::HeaderError>,
    what: &'static str,
) -> Result<T, DialogError> {
    v.ok().flatten().ok_or(DialogError::BadHeader(what))
}

fn tag_of(a: &NameAddr, what: &'static str) -> Result<String, DialogError> {
    a.tag()
        .map(str::to_owned)
        .ok_or(DialogError::BadHeader(what))
}

impl Dialog {
    /// The UAC side, from our request and a 1xx (with a To tag) or 2xx to it (RFC 3261
    /// section 12.1.2): the route set is the Record-Route of the response, reversed.
    pub fn from_uac(req: &Request, resp: &Response) -> Result<Self, DialogError> {
        let state = match resp.status.class() {
            1 if resp.status.as_u16() > 100 => DialogState::Early,
            2 => DialogState::Confirmed,
            _ => return Err(DialogError::NoDialog),
        };
        let from = need(req.headers.from(), "From")?;
        let to = need(resp.headers.to(), "To")?;
        let Some(remote_tag) = to.tag().map(str::to_owned) else {
            return Err(DialogError::NoDialog);
        };
        let call_id = need(req.headers.call_id(), "Call-ID")?;
        let cseq = need(req.headers.cseq(), "CSeq")?;
        let mut route_set = resp
            .headers
            .record_route()
            .map_err(|_| DialogError::BadHeader("Record-Route"))?;
        route_set.reverse();
        Ok(Self {
            id: DialogId {
                call_id: call_id.0,
                local_tag: tag_of(&from, "From")?,
                remote_tag,
            },
            state,
            local_uri: from,
            remote_uri: to,
            remote_target: first_contact_uri(&resp.headers)?,
            route_set,
            local_seq: cseq.seq,
            remote_seq: None,
        })
    }

    /// The UAS side, from the request and the tag we put in our 1xx/2xx (RFC 3261 section
    /// 12.1.1): the route set is the request's Record-Route, in order.
    pub fn from_uas(
        req: &Request,
        local_tag: &str,
        state: DialogState,
    ) -> Result<Self, DialogError> {
        let from = need(req.headers.from(), "From")?;
        let mut to = need(req.headers.to(), "To")?;
        if to.tag().is_none() {
            to.params.push(cpm_sip::Param::new("tag", Some(local_tag)));
        }
        let call_id = need(req.headers.call_id(), "Call-ID")?;
        let cseq = need(req.headers.cseq(), "CSeq")?;
        let route_set = req
            .headers
            .record_route()
            .map_err(|_| DialogError::BadHeader("Record-Route"))?;
        Ok(Self {
            id: DialogId {
                call_id: call_id.0,
                local_tag: local_tag.to_owned(),
                remote_tag: tag_of(&from, "From")?,
            },
            state,
            local_uri: to,
            remote_uri: from,
            remote_target: first_contact_uri(&req.headers)?,
            route_set,
            // Our first request in the dialog takes a number of our own choice; 0 means
            // "none sent yet" and the first one sent gets 1.
            local_seq: 0,
            remote_seq: Some(cseq.seq),
        })
    }

    /// A request inside the dialog (RFC 3261 section 12.2.1.1): Request-URI the remote target
    /// (loose routing: the route set goes into Route as it is), To/From with the tags, the
    /// Call-ID, the next CSeq (ACK and CANCEL reuse the INVITE's: pass `reuse_seq`). The
    /// caller adds Via, Max-Forwards, Contact and the body.
    pub fn request(&mut self, method: Method, reuse_seq: Option<u32>) -> Request {
        let seq = reuse_seq.unwrap_or_else(|| {
            self.local_seq = self.local_seq.wrapping_add(1).max(1);
            self.local_seq
        });
        let mut req = Request::new(method.clone(), self.remote_target.clone());
        for r in &self.route_set {
            req.headers
                .push(Header::new(HeaderName::Route, &r.to_string()));
        }
        req.headers
            .push(Header::new(HeaderName::From, &self.local_uri.to_string()));
        req.headers
            .push(Header::new(HeaderName::To, &self.remote_uri.to_string()));
        req.headers
            .push(Header::new(HeaderName::CallId, &self.id.call_id));
        req.headers.push(Header::new(
            HeaderName::CSeq,
            &CSeq { seq, method }.to_string(),
        ));
        req
    }

    /// Checks a request the peer sent in the dialog (RFC 3261 section 12.2.2): its CSeq must
    /// grow (a lower one gets 500), and a target refresh (re-INVITE, UPDATE) updates the
    /// remote target. Returns `false` for an out-of-order request.
    pub fn on_remote_request(&mut self, req: &Request) -> bool {
        let Ok(Some(cseq)) = req.headers.cseq() else {
            return false;
        };
        if req.method != Method::Ack {
            if self.remote_seq.is_some_and(|s| cseq.seq <= s) {
                return false;
            }
            self.remote_seq = Some(cseq.seq);
        }
        if matches!(req.method, Method::Invite | Method::Update)
            && let Ok(uri) = first_contact_uri(&req.headers)
        {
            self.remote_target = uri;
        }
        true
    }

    /// A 2xx to our request confirms an early dialog and may refresh the target.
    pub fn on_success(&mut self, resp: &Response) {
        self.state = DialogState::Confirmed;
        if let Ok(uri) = first_contact_uri(&resp.headers) {
            self.remote_target = uri;
        }
    }
}
