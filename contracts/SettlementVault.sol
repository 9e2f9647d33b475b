// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @dev The two ERC-20 calls the vault makes.
interface IERC20Transfers {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title SettlementVault
/// @notice Holds the USDC behind the ledger. Users deposit here (the operator credits the
///         ledger account named in the Deposit event); the operator commits the ledger's
///         sealed block headers in order; anyone may then pay out a withdrawal of a
///         committed block with a Merkle proof against the block's withdrawal root.
///
///         Block header (176 bytes, as ledger/core/blocks.py encodes it):
///           "LBLK0001" ++ abi.encodePacked(uint64 number, uint64 firstSeq, uint64 lastSeq,
///             uint64 sealedAt, uint64 leafCount, bytes32 prevBlockHash, bytes32 txHeadHash,
///             bytes32 stateRoot, bytes32 withdrawalRoot)
///           blockHash = sha256(header)
///         Withdrawal leaf (45 bytes in):
///           sha256(0x02 ++ uint64 seq ++ address recipient ++ uint128 amount)
///         Inner node: sha256(0x01 ++ left ++ right); a level with an odd number of nodes
///         promotes its last node unchanged (ledger/core/merkle.py).
contract SettlementVault {
    struct Block {
        bytes32 blockHash;
        bytes32 stateRoot;
        bytes32 withdrawalRoot;
    }

    uint256 private constant HEADER_LENGTH = 176;
    bytes8 private constant HEADER_MAGIC = "LBLK0001";
    bytes1 private constant NODE_PREFIX = 0x01;
    bytes1 private constant WITHDRAWAL_PREFIX = 0x02;

    /// @notice The USDC token held.
    address public immutable usdc;
    /// @notice The only address that may commit blocks.
    address public immutable operator;

    /// @notice The id the next deposit gets (ids start at 1 and increase by one).
    uint64 public nextDepositId = 1;
    /// @notice The number of the last committed block (0 before the first).
    uint64 public lastBlockNumber;

    /// @notice Committed blocks by number (all zero for a number not committed).
    mapping(uint64 => Block) public blocks;
    /// @notice Withdrawal leaves already paid out.
    mapping(bytes32 => bool) public claimed;

    event Deposit(
        uint64 indexed depositId, address indexed from, address indexed l2Account, uint128 amount
    );
    event BlockCommitted(
        uint64 indexed number, bytes32 blockHash, bytes32 stateRoot, bytes32 withdrawalRoot
    );
    event WithdrawalPaid(
        uint64 indexed blockNumber, uint64 indexed seq, address indexed recipient, uint128 amount
    );

    /// @notice The operator given to the constructor is the zero address.
    error ZeroOperator();
    /// @notice The token given to the constructor has no code.
    error TokenNotAContract(address token);
    /// @notice A deposit of nothing.
    error ZeroAmount();
    /// @notice A deposit naming the zero address as the ledger account to credit.
    error ZeroL2Account();
    /// @notice `caller` is not the operator.
    error NotOperator(address caller);
    /// @notice The header is `length` bytes, not 176.
    error BadHeaderLength(uint256 length);
    /// @notice The header does not start with "LBLK0001".
    error BadHeaderMagic(bytes8 magic);
    /// @notice Block `number` is already committed; committed blocks are never rewritten.
    error BlockAlreadyCommitted(uint64 number);
    /// @notice Blocks are committed in order: `expected` is next, `number` was given.
    error UnexpectedBlockNumber(uint64 expected, uint64 number);
    /// @notice The header's previous block hash is `given`, not the last committed `expected`.
    error PrevBlockHashMismatch(bytes32 expected, bytes32 given);
    /// @notice No block `number` is committed.
    error UnknownBlock(uint64 number);
    /// @notice The withdrawal with this leaf hash was already paid.
    error AlreadyClaimed(bytes32 leaf);
    /// @notice The proof's shape does not fit: index >= count, too few or too many siblings.
    error MalformedProof();
    /// @notice The proof does not lead to the block's withdrawal root.
    error InvalidProof();
    /// @notice The token refused a transfer without saying why (or returned false).
    error TokenTransferFailed();

    constructor(address usdc_, address operator_) {
        if (operator_ == address(0)) revert ZeroOperator();
        if (usdc_.code.length == 0) revert TokenNotAContract(usdc_);
        usdc = usdc_;
        operator = operator_;
    }

    // ---------------------------------------------------------------- deposits

    /// @notice Pulls `amount` USDC from the caller (approve the vault first) for the ledger
    ///         account `l2Account`.
    function deposit(uint128 amount, address l2Account) external returns (uint64 depositId) {
        if (amount == 0) revert ZeroAmount();
        if (l2Account == address(0)) revert ZeroL2Account();
        depositId = nextDepositId++;
        _callToken(abi.encodeCall(IERC20Transfers.transferFrom, (msg.sender, address(this), amount)));
        emit Deposit(depositId, msg.sender, l2Account, amount);
    }

    // ---------------------------------------------------------------- blocks

    /// @notice Commits the next sealed block header (operator only).
    function commitBlock(bytes calldata header) external {
        if (msg.sender != operator) revert NotOperator(msg.sender);
        if (header.length != HEADER_LENGTH) revert BadHeaderLength(header.length);
        if (bytes8(header[0:8]) != HEADER_MAGIC) revert BadHeaderMagic(bytes8(header[0:8]));

        uint64 number = uint64(bytes8(header[8:16]));
        uint64 last = lastBlockNumber;
        if (number != 0 && number <= last) revert BlockAlreadyCommitted(number);
        if (number != last + 1) revert UnexpectedBlockNumber(last + 1, number);

        bytes32 prevBlockHash = bytes32(header[48:80]);
        bytes32 lastHash = blocks[last].blockHash;
        if (prevBlockHash != lastHash) revert PrevBlockHashMismatch(lastHash, prevBlockHash);

        bytes32 blockHash = sha256(header);
        bytes32 stateRoot = bytes32(header[112:144]);
        bytes32 withdrawalRoot = bytes32(header[144:176]);
        lastBlockNumber = number;
        blocks[number] = Block(blockHash, stateRoot, withdrawalRoot);
        emit BlockCommitted(number, blockHash, stateRoot, withdrawalRoot);
    }

    /// @notice The hash of the last committed block (zero before the first).
    function lastBlockHash() external view returns (bytes32) {
        return blocks[lastBlockNumber].blockHash;
    }

    // ---------------------------------------------------------------- withdrawals

    /// @notice Pays withdrawal `seq` of `amount` USDC to `recipient`, proven by the leaf at
    ///         `index` of the `count` leaves under block `blockNumber`'s withdrawal root.
    ///         Anyone may call it; the money only ever goes to `recipient`.
    function claim(
        uint64 blockNumber,
        uint64 seq,
        address recipient,
        uint128 amount,
        uint256 index,
        uint256 count,
        bytes32[] calldata siblings
    ) external {
        Block storage committed = blocks[blockNumber];
        if (committed.blockHash == bytes32(0)) revert UnknownBlock(blockNumber);
        bytes32 leaf = withdrawalLeaf(seq, recipient, amount);
        if (claimed[leaf]) revert AlreadyClaimed(leaf);
        if (rootFromProof(leaf, index, count, siblings) != committed.withdrawalRoot) {
            revert InvalidProof();
        }
        claimed[leaf] = true;
        _callToken(abi.encodeCall(IERC20Transfers.transfer, (recipient, amount)));
        emit WithdrawalPaid(blockNumber, seq, recipient, amount);
    }

    /// @notice sha256(0x02 ++ uint64 seq ++ address recipient ++ uint128 amount).
    function withdrawalLeaf(uint64 seq, address recipient, uint128 amount)
        public
        pure
        returns (bytes32)
    {
        return sha256(abi.encodePacked(WITHDRAWAL_PREFIX, seq, recipient, amount));
    }

    /// @notice Folds a proof up to its root exactly as ledger.core.merkle.root_from_proof;
    ///         reverts with MalformedProof where that returns None.
    function rootFromProof(bytes32 leaf, uint256 index, uint256 count, bytes32[] calldata siblings)
        public
        pure
        returns (bytes32 node)
    {
        if (index >= count) revert MalformedProof();
        node = leaf;
        uint256 used;
        uint256 size = count;
        while (size > 1) {
            if ((index ^ 1) < size) {
                if (used >= siblings.length) revert MalformedProof();
                bytes32 sibling = siblings[used];
                unchecked {
                    ++used;
                }
                node = index & 1 == 1
                    ? sha256(abi.encodePacked(NODE_PREFIX, sibling, node))
                    : sha256(abi.encodePacked(NODE_PREFIX, node, sibling));
            }
            index >>= 1;
            size = (size >> 1) + (size & 1); // ceil(size / 2) without overflow
        }
        if (used != siblings.length) revert MalformedProof();
    }

    // ---------------------------------------------------------------- token calls

    /// @dev Calls the token; bubbles its revert, and accepts empty or `true` return data.
    function _callToken(bytes memory data) private {
        (bool ok, bytes memory result) = usdc.call(data);
        if (!ok) {
            if (result.length != 0) {
                assembly ("memory-safe") {
                    revert(add(result, 32), mload(result))
                }
            }
            revert TokenTransferFailed();
        }
        if (result.length != 0 && (result.length != 32 || abi.decode(result, (bool)) != true)) {
            revert TokenTransferFailed();
        }
    }
}
